"""TensorRT engines built from the exported ONNX graphs (offline, by `xemo export --format tensorrt`).

Engines are tied to the GPU model, the TensorRT version, the exact ONNX graph, the precision and the
optimisation profiles, so they are cached in DIR/tensorrt/ under a key of all five and never built at serve
time (engines/runtime/tensorrt.py only loads them). Written against TensorRT 10's documented Python API
(Builder, OnnxParser, IBuilderConfig, IOptimizationProfile, build_serialized_network); the parts that need no
GPU (profiles, keys, availability) are plain Python and unit-tested.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.manifest import EngineEntry
from export.onnx_export import AUDIO_MIN_SAMPLES, VIDEO, GraphSpec

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: per input name, the (min, opt, max) shapes."""

    shapes: dict[str, tuple[Shape, Shape, Shape]]

    def to_dict(self) -> dict[str, Any]:
        return {k: [list(s) for s in v] for k, v in sorted(self.shapes.items())}

    def fits(self, shapes: dict[str, Shape]) -> bool:
        for name, shape in shapes.items():
            lo, _, hi = self.shapes[name]
            if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi, strict=True)):
                return False
        return True


def opt_batch(max_batch: int) -> int:
    return max(1, max_batch // 2)


def profiles(spec: GraphSpec, buckets_samples: Sequence[int] = ()) -> list[Profile]:
    """Video: one profile over batch 1..max. Audio: one per length bucket (batch 1..max, time in (prev, bucket]).

    At run time audio is padded up to its bucket (the opt shape), so each engine profile runs at its best shape.
    """
    b_lo, b_opt, b_hi = 1, opt_batch(spec.max_batch), spec.max_batch
    if spec.name == VIDEO:
        (inp,) = spec.inputs
        rest = tuple(int(d) for d in inp.shape[1:])
        return [Profile({inp.name: ((b_lo, *rest), (b_opt, *rest), (b_hi, *rest))})]
    buckets = sorted({min(int(b), spec.max_samples) for b in buckets_samples} | {spec.max_samples})
    out, prev = [], AUDIO_MIN_SAMPLES - 1
    for b in buckets:
        if b <= prev:
            continue
        shape = ((b_lo, prev + 1), (b_opt, b), (b_hi, b))
        out.append(Profile({t.name: shape for t in spec.inputs}))
        prev = b
    return out


def select_profile(profs: Sequence[Profile], shapes: dict[str, Shape]) -> int:
    """Index of the first (smallest) profile that accepts these shapes; -1 when none does."""
    for i, p in enumerate(profs):
        if p.fits(shapes):
            return i
    return -1


def graph_digest(files: dict[str, str]) -> str:
    """One sha256 for a graph and its external data (weights live in the .data file, not in the .onnx)."""
    return hashlib.sha256(json.dumps(sorted(files.values())).encode()).hexdigest()


def trt_major(version: str) -> int:
    return int(version.split(".")[0])


@dataclass(frozen=True)
class PrecisionPlan:
    graph_dtype: str  # dtype of the ONNX graph the engine is built from
    flags: tuple[str, ...]  # trt.BuilderFlag names (TensorRT 10 weak typing only)
    error: str | None = None


def precision_plan(precision: str, trt_version: str) -> PrecisionPlan:
    """How to get `precision` out of this TensorRT.

    TensorRT 10 builds reduced precision from the fp32 graph with builder flags (INT8 with a calibrator).
    TensorRT 11 removed those flags (strongly typed networks only): fp16/bf16 engines are built from a graph
    exported in that dtype; int8 needs an explicitly quantized (Q/DQ) graph, which this exporter does not make.
    """
    if precision not in PRECISIONS:
        return PrecisionPlan("float32", (), f"unknown precision {precision!r}")
    dtype = {"fp16": "float16", "bf16": "bfloat16"}.get(precision, "float32")
    if trt_major(trt_version) >= 11:
        if precision == "int8":
            return PrecisionPlan(
                "float32",
                (),
                "TensorRT 11 has no implicit INT8 (it needs a Q/DQ-quantized "
                "ONNX graph, e.g. from NVIDIA ModelOpt); use --precision fp16, bf16 or fp32",
            )
        return PrecisionPlan(dtype, ())
    flags = {"fp32": (), "fp16": ("FP16",), "bf16": ("BF16",), "int8": ("INT8", "FP16")}[precision]
    return PrecisionPlan("float32", flags)


def cache_key(gpu: str, trt_version: str, onnx_sha256: str, precision: str, profs: Sequence[Profile]) -> str:
    blob = json.dumps(
        {
            "gpu": gpu,
            "tensorrt": trt_version,
            "onnx": onnx_sha256,
            "precision": precision,
            "profiles": [p.to_dict() for p in profs],
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def engine_name(graph: str, precision: str, key: str) -> str:
    return f"tensorrt/{graph}.{precision}.{key}.plan"


def gpu_name() -> str | None:
    """The CUDA device 0 name, or None when no GPU is visible."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # a broken CUDA install reads as "no GPU"
        pass
    if shutil.which("nvidia-smi"):
        try:
            r = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            names = [n.strip() for n in r.stdout.splitlines() if n.strip()]
            return names[0] if names else None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def unavailable_reason() -> str | None:
    """Why TensorRT engines cannot be built or run here, or None when they can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            "the `tensorrt` Python package is not installed (it needs a CUDA GPU machine and NVIDIA's "
            "package index: pip install tensorrt-cu12)"
        )
    except Exception as e:  # installed but its CUDA libraries do not load
        return f"the `tensorrt` package is installed but cannot load its libraries ({type(e).__name__})"
    if gpu_name() is None:
        return "no CUDA GPU is visible on this machine"
    return None


def build_engine(
    onnx_path: Path,
    profs: Sequence[Profile],
    precision: str,
    workspace_mb: int,
    calibration: Callable[[], list[dict[str, Any]]] | None = None,
) -> bytes:
    """Parse the ONNX graph and build a serialized engine (TensorRT 10 API). Needs tensorrt and a GPU."""
    import tensorrt as trt

    plan = precision_plan(precision, trt.__version__)
    if plan.error:
        raise ValueError(plan.error)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch only (10.x); strongly typed always (11.x)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads the external data next to the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * (1 << 20))
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if "INT8" in plan.flags:
        # Implicit (calibrated) INT8, FP16 for the layers TensorRT keeps out of INT8 (TensorRT 10 only).
        if calibration is None:
            raise ValueError("int8 needs calibration batches")
        config.int8_calibrator = _calibrator(trt, calibration(), onnx_path.with_suffix(".int8.cache"))
    created: list[Any] = []
    for p in profs:
        op = builder.create_optimization_profile()
        for name, (lo, opt, hi) in p.shapes.items():
            op.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(op)
        created.append(op)
    if "INT8" in plan.flags:
        config.set_calibration_profile(created[0])  # calibration batches must fit the first profile
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path.name} (see the log above)")
    return bytes(serialized)


def _calibrator(trt: Any, batches: list[dict[str, Any]], cache: Path) -> Any:
    """An entropy calibrator that feeds the given numpy batches through CUDA memory held by torch."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batches, self.i, self.held = batches, 0, []

        def get_batch_size(self) -> int:
            return int(next(iter(batches[0].values())).shape[0]) if batches else 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.i >= len(self.batches):
                return None
            b = self.batches[self.i]
            self.i += 1
            self.held = [torch.from_numpy(b[n]).cuda().contiguous() for n in names]
            return [t.data_ptr() for t in self.held]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            cache.write_bytes(bytes(data))

    return Calibrator()


def build_all(
    out_dir: Path,
    graphs: dict[str, tuple[GraphSpec, str, dict[str, str]]],
    precision: str,
    buckets_samples: Sequence[int],
    workspace_mb: int,
    calibration: Callable[[str], list[dict[str, Any]]] | None = None,
    on_graph: Callable[[str, bool], None] | None = None,
) -> list[EngineEntry]:
    """Build (or reuse from the cache) one engine per graph.

    graphs: name -> (spec, ONNX file relative to out_dir, {graph file: sha256} incl. external data)."""
    import tensorrt as trt

    from export.onnx_export import sha256_file

    gpu = gpu_name() or "unknown"
    out: list[EngineEntry] = []
    (out_dir / "tensorrt").mkdir(parents=True, exist_ok=True)
    for name, (spec, onnx_file, onnx_files) in graphs.items():
        profs = profiles(spec, buckets_samples)
        key = cache_key(gpu, trt.__version__, graph_digest(onnx_files), precision, profs)
        rel = engine_name(name, precision, key)
        path = out_dir / rel
        cached = path.is_file()
        if not cached:
            calib = (lambda n=name: calibration(n)) if calibration and precision == "int8" else None
            data = build_engine(out_dir / onnx_file, profs, precision, workspace_mb, calib)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        out.append(
            EngineEntry(
                graph=name,
                file=rel,
                sha256=sha256_file(path),
                key=key,
                gpu=gpu,
                tensorrt=trt.__version__,
                precision=precision,
                profiles=[p.to_dict() for p in profs],
                onnx=dict(onnx_files),
            )
        )
        if on_graph:
            on_graph(name, cached)
    return out

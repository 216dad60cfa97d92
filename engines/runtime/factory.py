"""Swappable video/audio front-end callables for the XEmoGPT pipeline, per settings.export.runtime.

- torch: the given PyTorch modules, under inference mode;
- onnx: the graphs in settings.export.dir through ONNX Runtime (engines/runtime/onnx.py);
- tensorrt: the prebuilt engines in settings.export.dir (engines/runtime/tensorrt.py).

For onnx/tensorrt the export directory is checked before anything is served: manifest readable, files match
their sha256, parity passed at export, the contract fits the model being served (frames, image size, token
width) and the configured weights are the ones exported. Any failure raises ArtifactError with what to do.
Every callable takes and returns torch tensors: video(pixel_values) -> tokens;
audio(input_values, attention_mask) -> (tokens, valid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.errors import ArtifactError, RuntimeNotReady
from export import manifest as mf
from export.onnx_export import AUDIO, VIDEO
from xemo.settings import Settings

VideoFn = Callable[[torch.Tensor], torch.Tensor]
AudioFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class FrontEnds:
    runtime: str
    video: VideoFn
    audio: AudioFn
    graphs: list[Any] = field(default_factory=list)  # OrtGraph / TrtGraph, for health()
    manifest: mf.Manifest | None = None

    def health(self) -> dict[str, Any]:
        """For /readyz: ready only if every graph runs on the providers it was configured for."""
        parts = [g.health() for g in self.graphs]
        return {"runtime": self.runtime, "ready": all(p["ready"] for p in parts), "graphs": parts}


def torch_front_ends(video: nn.Module, audio: nn.Module) -> FrontEnds:
    def video_fn(pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return video(pixel_values)

    def audio_fn(input_values: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return audio(input_values, attention_mask)

    return FrontEnds("torch", video_fn, audio_fn)


def check_artifacts(
    settings: Settings, contract: dict[str, int] | None, sources: dict[str, str] | None
) -> tuple[Path, mf.Manifest]:
    """The export directory's manifest, after every check that needs no runtime."""
    out_dir = settings.export.dir
    if out_dir is None:
        raise ArtifactError(
            f"export.runtime is {settings.export.runtime!r} but export.dir is not set; "
            "run `xemo export --out DIR` and set export.dir: DIR"
        )
    out_dir = Path(out_dir)
    m = mf.load(out_dir)
    if m.profile != settings.profile:
        raise ArtifactError(f"artefacts were exported for profile {m.profile!r}, serving {settings.profile!r}")
    if contract:
        mf.check_contract(m, contract)
    if sources is not None:
        mf.check_sources(m, sources)
    for name in (VIDEO, AUDIO):
        mf.check_graph(m, name, out_dir)
    return out_dir, m


def load_front_ends(
    settings: Settings,
    torch_modules: Callable[[], tuple[nn.Module, nn.Module]] | None = None,
    contract: dict[str, int] | None = None,
    sources: dict[str, Path | None] | None = None,
) -> FrontEnds:
    """The front ends for settings.export.runtime.

    torch_modules builds the PyTorch (video, audio) modules; only called for runtime torch, so the onnx and
    tensorrt runtimes never load CLIP/HuBERT into memory. contract/sources, when given, are checked against
    the manifest (token width must equal the LLM hidden size; weights must be the exported ones).
    """
    runtime = settings.export.runtime
    if runtime == "torch":
        if torch_modules is None:
            raise ValueError("runtime torch needs the PyTorch modules")
        return torch_front_ends(*torch_modules())
    hashes = mf.source_hashes(sources) if sources is not None else None
    out_dir, m = check_artifacts(settings, contract, hashes)
    if runtime == "onnx":
        return _onnx(settings, out_dir, m)
    if runtime == "tensorrt":
        return _tensorrt(out_dir, m)
    raise ValueError(f"unknown export.runtime {runtime!r}")


def _onnx(settings: Settings, out_dir: Path, m: mf.Manifest) -> FrontEnds:
    from engines.runtime.onnx import OrtGraph

    e = settings.export
    graphs = {}
    for name in (VIDEO, AUDIO):
        g = m.graphs[name]
        graphs[name] = OrtGraph(
            out_dir / g.file,
            e.providers,
            e.intra_op_threads,
            e.inter_op_threads,
            [t["name"] for t in g.inputs],
            [t["name"] for t in g.outputs],
        )
    return ort_front_ends(graphs[VIDEO], graphs[AUDIO], m)


def ort_front_ends(video_g: Any, audio_g: Any, m: mf.Manifest | None = None) -> FrontEnds:
    """The callables over two ONNX Runtime graphs (engines.runtime.onnx.OrtGraph)."""

    def video_fn(pixel_values: torch.Tensor) -> torch.Tensor:
        (tokens,) = video_g(pixel_values.float())
        return torch.as_tensor(tokens)

    def audio_fn(input_values: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, valid = audio_g(input_values.float(), attention_mask.long())
        return torch.as_tensor(tokens), torch.as_tensor(valid).bool()

    return FrontEnds("onnx", video_fn, audio_fn, [video_g, audio_g], m)


def _tensorrt(out_dir: Path, m: mf.Manifest) -> FrontEnds:
    from engines.runtime.tensorrt import TrtGraph
    from export.tensorrt_build import Profile, cache_key, gpu_name, graph_digest, unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise RuntimeNotReady(f"export.runtime is 'tensorrt' but {reason}")
    import tensorrt as trt

    gpu = gpu_name() or "unknown"
    graphs = {}
    for name in (VIDEO, AUDIO):
        for e in m.tensorrt:
            profs = [Profile({k: tuple(tuple(s) for s in v) for k, v in p.items()}) for p in e.profiles]
            if e.graph == name and e.key == cache_key(gpu, trt.__version__, graph_digest(e.onnx), e.precision, profs):
                if not e.parity or not all(r.get("passed") for r in e.parity):
                    raise ArtifactError(
                        f"the {name} TensorRT engine ({e.precision}) failed or lacks its parity "
                        "check at export; it will not be served"
                    )
                mf.verify_files(out_dir, {e.file: e.sha256}, f"{name} TensorRT engine")
                graphs[name] = TrtGraph(out_dir / e.file, e.profiles)
                break
        else:
            raise ArtifactError(
                f"no TensorRT engine for the {name} graph built for {gpu} with TensorRT "
                f"{trt.__version__}; run `xemo export --format tensorrt` on this machine "
                "(engines are never built at serve time)"
            )
    video_g, audio_g = graphs[VIDEO], graphs[AUDIO]

    def video_fn(pixel_values: torch.Tensor) -> torch.Tensor:
        (tokens,) = video_g(pixel_values.float())
        return tokens.float()

    def audio_fn(input_values: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, valid = audio_g(input_values.float(), attention_mask.long())
        return tokens.float(), valid.bool()

    return FrontEnds("tensorrt", video_fn, audio_fn, [video_g, audio_g], m)

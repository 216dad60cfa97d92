"""The two exported graphs (video, audio): their IO contract and the dynamo-based ONNX export.

The legacy TorchScript exporter bakes traced shapes into attention reshapes, so dynamic batch and audio length
only survive with `torch.onnx.export(dynamo=True)` and explicit `torch.export.Dim`s.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

VIDEO, AUDIO = "video", "audio"
AUDIO_HOP = 320  # HuBERT's conv stack: 16 kHz samples per output frame (50 frames/s)
AUDIO_MIN_SAMPLES = 800  # a few conv receptive fields; shorter clips are padded by ingest anyway


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int | str, ...]  # str = dynamic axis name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch: int
    max_samples: int = 0  # audio only: upper bound of the time axis

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}


def video_spec(num_frames: int, image_size: int, dim: int, max_batch: int) -> GraphSpec:
    """pixel_values (B, F, 3, H, W) float32 -> tokens (B, F, D) float32."""
    return GraphSpec(
        VIDEO,
        (TensorSpec("pixel_values", "float32", ("batch", num_frames, 3, image_size, image_size)),),
        (TensorSpec("tokens", "float32", ("batch", num_frames, dim)),),
        max_batch,
    )


def audio_spec(dim: int, max_batch: int, max_samples: int) -> GraphSpec:
    """input_values (B, T) float32 + attention_mask (B, T) int64 -> tokens (B, F, D) + valid (B, F) bool."""
    return GraphSpec(
        AUDIO,
        (
            TensorSpec("input_values", "float32", ("batch", "time")),
            TensorSpec("attention_mask", "int64", ("batch", "time")),
        ),
        (TensorSpec("tokens", "float32", ("batch", "frames", dim)), TensorSpec("valid", "bool", ("batch", "frames"))),
        max_batch,
        max_samples,
    )


@dataclass
class ExportedGraph:
    name: str
    file: str  # relative to the artefact dir
    files: dict[str, str] = field(default_factory=dict)  # every file the graph needs -> sha256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def example_inputs(spec: GraphSpec, batch: int = 2, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with. Batch 2 (not 1) so the exporter cannot specialise the batch axis to a constant."""
    if spec.name == VIDEO:
        _, f, c, h, w = spec.inputs[0].shape
        return (torch.randn(batch, int(f), int(c), int(h), int(w), dtype=dtype),)
    t = 16000
    mask = torch.ones(batch, t, dtype=torch.int64)
    mask[1:, t // 2 :] = 0  # a padded row, so the masking path is traced
    return torch.randn(batch, t, dtype=dtype), mask


def _dynamic_shapes(spec: GraphSpec) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    batch = Dim("batch", min=1, max=max(2, spec.max_batch))
    if spec.name == VIDEO:
        return {"pixel_values": {0: batch}}
    time = Dim("time", min=AUDIO_MIN_SAMPLES, max=max(spec.max_samples, 2 * AUDIO_MIN_SAMPLES))
    return {"input_values": {0: batch, 1: time}, "attention_mask": {0: batch, 1: time}}


def export_onnx(
    module: nn.Module,
    spec: GraphSpec,
    out_dir: Path,
    opset: int,
    stem: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> ExportedGraph:
    """Export `module` (a front end in eval mode on CPU, weights in `dtype`) to `out_dir/<stem>.onnx` (+ external
    data). A float16/bfloat16 export is a strongly typed graph for TensorRT 11, which has no precision flags."""
    import onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem or spec.name}.onnx"
    for old in (path, path.with_name(path.name + ".data")):
        old.unlink(missing_ok=True)
    module = module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            example_inputs(spec, dtype=dtype),
            str(path),
            dynamo=True,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_shapes=_dynamic_shapes(spec),
            opset_version=opset,
            external_data=True,
            verbose=False,
        )
    # The exporter names the audio frame axis by its formula ("((time//80)-3)//2 ..."); give it a stable name.
    model = onnx.load(str(path), load_external_data=False)
    for value, want in zip(model.graph.output, spec.outputs, strict=True):
        for dim, axis in zip(value.type.tensor_type.shape.dim, want.shape, strict=True):
            if isinstance(axis, str) and dim.HasField("dim_param"):
                dim.dim_param = axis
    onnx.save(model, str(path))
    files = {p.name: sha256_file(p) for p in (path, path.with_name(path.name + ".data")) if p.is_file()}
    return ExportedGraph(spec.name, path.name, files)

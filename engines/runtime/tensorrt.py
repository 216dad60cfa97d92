"""TensorRT engine execution for the exported front ends (TensorRT 10 named-tensor API, CUDA via torch).

Engines are built offline by `xemo export --format tensorrt` and only loaded here. One execution context per
optimisation profile; audio is padded up to its length bucket (the profile's opt shape) and the output frames
are cut back to the unpadded length afterwards. `tensorrt` is imported only when this runtime is chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.errors import ArtifactError, RuntimeNotReady
from export.tensorrt_build import Profile, Shape, select_profile, unavailable_reason


class TrtGraph:
    def __init__(self, path: Path, profiles: list[dict[str, Any]]) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeNotReady(f"runtime tensorrt configured but {reason}")
        import tensorrt as trt
        import torch

        self._trt, self._torch = trt, torch
        self.name = path.name.split(".")[0]
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {path.name} (built by another TensorRT/GPU?)")
        self.profiles = [Profile({k: tuple(tuple(s) for s in v) for k, v in p.items()}) for p in profiles]
        if self.engine.num_optimization_profiles != len(self.profiles):
            raise ArtifactError(
                f"{path.name} has {self.engine.num_optimization_profiles} profiles, "
                f"the manifest lists {len(self.profiles)}; re-export"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = torch.cuda.Stream()
        self.contexts = []
        for i in range(len(self.profiles)):
            ctx = self.engine.create_execution_context()
            ctx.set_optimization_profile_async(i, self.stream.cuda_stream)
            self.contexts.append(ctx)
        self.stream.synchronize()

    def health(self) -> dict[str, Any]:
        return {"graph": self.name, "runtime": "tensorrt", "ready": True, "reason": None}

    def _torch_dtype(self, name: str) -> Any:
        trt, torch = self._trt, self._torch
        return {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.bfloat16: torch.bfloat16,
            trt.int64: torch.int64,
            trt.int32: torch.int32,
            trt.bool: torch.bool,
        }[self.engine.get_tensor_dtype(name)]

    def __call__(self, *inputs: Any) -> list[Any]:
        torch = self._torch
        # the engine's own input types (a float16/bfloat16 graph for TensorRT 11 reduced precision)
        xs = [
            torch.as_tensor(x).cuda().to(self._torch_dtype(n)).contiguous()
            for n, x in zip(self.inputs, inputs, strict=True)
        ]
        orig_t = xs[0].shape[1] if len(xs) == 2 else None
        idx = select_profile(self.profiles, {n: tuple(x.shape) for n, x in zip(self.inputs, xs, strict=True)})
        if idx < 0:
            raise ArtifactError(f"{self.name}: input shape {tuple(xs[0].shape)} is outside every engine profile")
        if orig_t is not None:  # audio: pad to the bucket so the engine runs at its opt shape
            bucket = self.profiles[idx].shapes[self.inputs[0]][1][1]
            xs = [torch.nn.functional.pad(x, (0, bucket - orig_t)) for x in xs]
        ctx = self.contexts[idx]
        for n, x in zip(self.inputs, xs, strict=True):
            ctx.set_input_shape(n, tuple(x.shape))
            ctx.set_tensor_address(n, x.data_ptr())
        outs = []
        for n in self.outputs:
            shape: Shape = tuple(ctx.get_tensor_shape(n))
            o = torch.empty(shape, dtype=self._torch_dtype(n), device="cuda")
            ctx.set_tensor_address(n, o.data_ptr())
            outs.append(o)
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.name} failed")
        self.stream.synchronize()
        if orig_t is not None:
            frames = _frames(orig_t)
            outs = [o[:, :frames] for o in outs]
        return outs


def _frames(samples: int) -> int:
    """HuBERT's conv stack output length for `samples` inputs (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2)."""
    n = samples
    for k, s in ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)):
        n = (n - k) // s + 1
    return n

"""ONNX Runtime sessions for the exported front-end graphs.

Execution providers come from settings.export.providers (e.g. TensorRT EP -> CUDA EP -> CPU EP). ONNX Runtime
silently drops a provider whose libraries are missing and runs on CPU, so after creating the session we compare
the providers actually active with the configured ones and refuse (RuntimeNotReady) when one is missing.
On a GPU provider, inputs and outputs go through IO binding (torch CUDA tensors are bound without a copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import ArtifactError, RuntimeNotReady

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def check_providers(configured: Sequence[str], active: Sequence[str]) -> str | None:
    """Why the active providers are not the configured ones, or None when they are.

    ORT always keeps the CPU provider as a last resort for nodes the others cannot run, so an extra CPU
    provider is fine; a configured provider that is not active is not.
    """
    missing = [p for p in configured if p not in active]
    if missing:
        return (
            f"configured ONNX Runtime providers {list(configured)} but active are {list(active)}: "
            f"{', '.join(missing)} did not load (missing libraries or no GPU)"
        )
    return None


def _provider_options(providers: Sequence[str], cache_dir: Path | None) -> list[Any]:
    out: list[Any] = []
    for p in providers:
        if p == "TensorrtExecutionProvider" and cache_dir is not None:
            # The TensorRT EP compiles at session creation; keep its engines next to the export, not in /tmp.
            out.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)}))
        else:
            out.append(p)
    return out


class OrtGraph:
    """One exported graph in an InferenceSession, called with numpy arrays or torch tensors."""

    def __init__(
        self,
        path: Path,
        providers: Sequence[str],
        intra_op_threads: int,
        inter_op_threads: int,
        expected_inputs: Sequence[str] = (),
        expected_outputs: Sequence[str] = (),
        strict: bool = True,
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = inter_op_threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # ORT's provider fallback warnings are replaced by our own check
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=_provider_options(providers, path.parent / "ort_trt_cache")
            )
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types for a damaged file
            raise ArtifactError(f"ONNX Runtime cannot load {path.name}: {str(e).splitlines()[0][:200]}") from None
        self.name = path.stem
        self.configured = list(providers)
        self.active = list(self.session.get_providers())
        self.not_ready_reason = check_providers(self.configured, self.active)
        if self.not_ready_reason and strict:
            raise RuntimeNotReady(self.not_ready_reason)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if (
            expected_inputs
            and list(expected_inputs) != self.input_names
            or expected_outputs
            and list(expected_outputs) != self.output_names
        ):
            raise ArtifactError(
                f"{path.name} has inputs {self.input_names} / outputs {self.output_names}, the manifest says "
                f"{list(expected_inputs)} / {list(expected_outputs)}; re-export"
            )
        self.on_gpu = bool(self.active) and self.active[0] in GPU_PROVIDERS

    def health(self) -> dict[str, Any]:
        return {
            "graph": self.name,
            "configured": self.configured,
            "active": self.active,
            "ready": self.not_ready_reason is None,
            "reason": self.not_ready_reason,
        }

    def __call__(self, *inputs: Any) -> list[Any]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.name} takes {len(self.input_names)} inputs, got {len(inputs)}")
        if self.on_gpu:
            return self._run_bound(inputs)
        feeds = {n: _to_numpy(x) for n, x in zip(self.input_names, inputs, strict=True)}
        return self.session.run(self.output_names, feeds)

    def _run_bound(self, inputs: Sequence[Any]) -> list[Any]:
        """GPU path: bind device tensors in place, keep outputs on the device, copy them out once."""
        binding = self.session.io_binding()
        for name, x in zip(self.input_names, inputs, strict=True):
            if _is_cuda_tensor(x):
                x = x.contiguous()
                binding.bind_input(name, "cuda", x.device.index or 0, _np_dtype(x), list(x.shape), x.data_ptr())
            else:
                binding.bind_cpu_input(name, _to_numpy(x))
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


def _is_cuda_tensor(x: Any) -> bool:
    return hasattr(x, "is_cuda") and bool(x.is_cuda)


def _np_dtype(x: Any) -> Any:
    return np.dtype(str(x.dtype).removeprefix("torch."))


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x)

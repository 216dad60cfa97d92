"""LLM runtimes behind one interface (engines/llm/base.py): llama.cpp and transformers, continuously batched.

Usage: backend = load_backend(smollm2_gguf_path(), "llama_cpp", n_ctx=2048, max_num_seqs=8)
       async for tok in backend.generate(["Hello", soft_tokens, "..."], SamplingParams(max_tokens=16)): ...

Every backend also offers: `score_choices` (sum log-prob per choice), `stats()` -> {"running", "waiting"} (plus
`prefix_cache_hits`, `prefix_cache_tokens_saved`, ... on llama_cpp with `prefix_cache_slots` > 0),
`step_listeners` (called with the number of sequences after each decode step, from the engine thread), and usage
counts on the last Token (`Token.usage`) and on the stream (`stream.usage`). Constraints: `choices` and `lark`
(llguidance, engines/llm/guidance.py) on both; `grammar` (GBNF) and `json_schema` on llama_cpp only
(transformers raises UnsupportedConstraint).
n_ctx is per sequence: llama_cpp reserves n_ctx * (max_num_seqs + prefix_cache_slots) KV cells up front.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from engines.errors import ModelError
from engines.llm.base import LLMBackend, SamplingParams, Segment, Token
from engines.llm.models import smollm2_gguf_path
from engines.llm.sampling import UnsupportedConstraint

__all__ = [
    "LLMBackend",
    "SamplingParams",
    "Segment",
    "Token",
    "UnsupportedConstraint",
    "load_backend",
    "smollm2_gguf_path",
]


def load_backend(
    path: Path,
    backend: Literal["llama_cpp", "transformers"] = "llama_cpp",
    *,
    device: str = "cpu",
    dtype: str = "float32",
    quantization: str = "none",
    n_ctx: int = 2048,
    n_threads: int = 2,
    n_threads_batch: int | None = None,
    max_num_seqs: int = 8,
    cache_dir: Path | None = None,
    prefill_chunk: int = 256,
    prefix_cache_slots: int = 0,
    fast_forward: bool = True,
    flash_attn: Literal["auto", "on", "off"] = "auto",
) -> LLMBackend:
    """Load a causal LM for serving. `path` is a GGUF file (either backend) or a Hugging Face model dir
    (transformers). `cache_dir` (transformers + GGUF only) keeps a dequantized copy so later loads are fast.
    `prefill_chunk`: prompt tokens prefilled between two decode steps (bounds the stall running streams see).
    `prefix_cache_slots` (llama_cpp only; 0 = off): extra KV slots holding recent prompts whose prefix a new
    prompt may reuse instead of prefilling it again (each costs n_ctx more KV cells).
    `n_threads_batch` (llama_cpp only; None = n_threads): threads for prompt chunks and for decode steps of
    several sequences; a step of one sequence runs on `n_threads`.
    `fast_forward`: tokens a constraint forces are streamed without sampling and written in one step.
    `flash_attn` (llama_cpp only): llama.cpp's fused attention kernel; auto = llama.cpp's choice for the device."""
    if prefill_chunk < 1:
        raise ModelError("prefill_chunk must be at least 1")
    path = Path(path)
    if not path.exists():
        raise ModelError(f"LLM model not found: {path.name}")
    if quantization not in ("none", "int8", "int4"):
        raise ModelError(f"unknown quantization {quantization!r}: use none, int8 or int4")
    if backend == "llama_cpp":
        if path.suffix != ".gguf" or not path.is_file():
            raise ModelError("the llama_cpp backend needs a .gguf file")
        if quantization != "none":
            raise ModelError(
                "llama_cpp uses the GGUF file's own quantization: set quantization to none and pick a "
                "quantized .gguf (e.g. Q4_1, Q8_0) instead"
            )
        from engines.llm.llama_cpp_backend import LlamaCppBackend

        b = LlamaCppBackend(
            path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            max_num_seqs=max_num_seqs,
            device=device,
            prefix_cache_slots=prefix_cache_slots,
            flash_attn=flash_attn,
        )
    elif backend == "transformers":
        from engines.llm.transformers_backend import TransformersBackend

        b = TransformersBackend(
            path,
            device=device,
            dtype=dtype,
            quantization=quantization,
            n_ctx=n_ctx,
            n_threads=n_threads,
            max_num_seqs=max_num_seqs,
            cache_dir=cache_dir,
        )
    else:
        raise ModelError(f"unknown LLM backend {backend!r}: use llama_cpp or transformers")
    b.prefill_chunk = prefill_chunk
    b.fast_forward = fast_forward
    return b

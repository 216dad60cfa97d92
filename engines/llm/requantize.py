"""A GGUF re-quantized by llama.cpp itself, made once and kept in a cache folder.

The bundled SmolLM2 file is Q4_1, for which llama.cpp's CPU backend has no repacked (interleaved) matmul kernels;
Q8_0 has them. Every Q4_1 weight (d * q + m, q in 0..15, per block of 32) is within half a Q8_0 step of a Q8_0
value (max |x| / 254 per block), far inside the 4-bit grid's own spacing, so Q4_1 -> Q8_0 keeps the model as it is
and makes prefill and decode cheaper (bench/cpu_profile.py). Q4_0 is cheaper still but re-quantizing a 4-bit file
to another 4-bit grid does change the model's outputs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from engines.errors import ModelError
from engines.llm.llama_cpp_lib import llama_cpp_module

# llama_ftype values (llama.h): the targets offered
FTYPES = {"q8_0": 7, "q4_0": 2}


def requantized(gguf: Path, kind: str, cache_dir: Path) -> Path:
    """`gguf` re-quantized to `kind` ("q8_0" or "q4_0"), cached in `cache_dir` under a name that changes with
    the source file (path, size and modification time), written atomically so concurrent loaders never read a
    partial file."""
    if kind not in FTYPES:
        raise ModelError(f"unknown re-quantization {kind!r}: use one of {', '.join(FTYPES)} or none")
    st = gguf.stat()
    tag = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:8]
    out = cache_dir / f"{gguf.stem}-{kind}-{tag}.gguf"
    if out.is_file():
        return out
    L = llama_cpp_module()  # sets the OpenMP wait policy before libggml loads (see llama_cpp_lib.py)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.partial")
    p = L.llama_model_quantize_default_params()
    p.ftype, p.allow_requantize, p.nthread = FTYPES[kind], True, min(2, os.cpu_count() or 1)
    try:
        if L.llama_model_quantize(str(gguf).encode(), str(tmp).encode(), p) != 0:
            raise ModelError(f"llama.cpp could not re-quantize {gguf.name} to {kind}")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out

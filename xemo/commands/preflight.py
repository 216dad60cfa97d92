"""The LLM preflight of `xemo serve` and `xemo analyze`: a test decode in a child process before the real load."""

from __future__ import annotations

from pathlib import Path

import typer

from xemo.settings import Settings


def llama_cpp_model(settings: Settings) -> Path | None:
    """The GGUF file the configured profile will load with llama.cpp, or None if it uses no llama.cpp."""
    if settings.profile == "lite":
        if settings.lite.llm_backend != "llama_cpp":
            return None
        if settings.lite.llm:
            return Path(settings.lite.llm)
        from engines.llm import smollm2_gguf_path

        return smollm2_gguf_path()
    x = settings.xemogpt
    if x.llm_backend == "llama_cpp" and x.llm is not None and Path(x.llm).suffix == ".gguf":
        return Path(x.llm)
    return None


def preflight(settings: Settings) -> int:
    """0 when the LLM runtime can decode on this machine (or there is nothing to check); else 3, said on stderr."""
    if not settings.llm_preflight:
        return 0
    model = llama_cpp_model(settings)
    if model is None or not model.is_file():
        return 0  # nothing of llama.cpp's to test; a missing file is reported by the real load
    from engines.llm.preflight import PreflightFailed, run_preflight

    try:
        run_preflight(model)
    except PreflightFailed as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        return 3
    return 0

"""A tiny llama.cpp decode in a child process, run before a command loads the LLM into its own.

A llama.cpp library built for another CPU, or with kernels that crash on this one (ggml's AMX kernels did, on
SmolLM2 Q4_1), dies by a signal in its first matrix multiply. In the server that is a segfault with no message.
The child takes that hit instead, and the command exits naming the CPU, the library build and the fix.

    python -m engines.llm.preflight MODEL.gguf   # the child: prints one JSON line and exits 0
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from engines.errors import ModelError
from engines.llm.llama_cpp_lib import cpu_flags, cpu_model

PROMPT = "The capital of France is"
FIX = ("Rebuild llama-cpp-python portably with `make install` (tools/llama_cpp_wheel.py: every x86-64 CPU "
       "variant, chosen at load time, no AMX), or reinstall it with CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" "
       "pip install --no-cache-dir --force-reinstall llama-cpp-python; a wheel built with GGML_NATIVE=ON on "
       "another machine (pip caches them) only runs on CPUs like that one.")


class PreflightFailed(ModelError):
    """The test decode did not complete; the message says why and what to do."""


@dataclass
class PreflightResult:
    variant: str | None  # the ggml CPU backend the child loaded (None: a build that links its backend)
    system_info: str
    text: str  # what the child decoded


def run_preflight(model: Path, *, timeout_s: float = 180.0, command: list[str] | None = None,
                  env: dict[str, str] | None = None) -> PreflightResult:
    """Run the child on `model` (or `command`, for tests) in `env` (default: this process's); raise
    PreflightFailed unless it succeeds."""
    cmd = command or [sys.executable, "-m", "engines.llm.preflight", str(model)]
    where = f"on this CPU ({cpu_model()}; flags: {' '.join(cpu_flags()) or 'unknown'})"
    try:
        # cwd: where `engines` is importable from, whatever the caller's working directory
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, env=env,
                              cwd=Path(__file__).resolve().parents[2])
    except subprocess.TimeoutExpired:
        raise PreflightFailed(f"a test decode with llama.cpp of {model.name} did not finish in {timeout_s:.0f} s "
                              f"{where}.") from None
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        raise PreflightFailed(f"llama.cpp crashed ({sig}) in a test decode of {model.name} {where}. The installed "
                              f"llama-cpp-python build cannot run on this CPU. {FIX}")
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise PreflightFailed(f"a test decode with llama.cpp of {model.name} failed (exit {proc.returncode}) "
                              f"{where}: {tail[0][:300]}")
    try:
        out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise PreflightFailed(f"the llama.cpp test decode of {model.name} printed no result {where}") from None
    return PreflightResult(out.get("variant"), out.get("system_info", ""), out.get("text", ""))


def _child(model: str) -> None:
    from engines.llm.llama_cpp_lib import cpu_variant, llama_cpp_module

    llama_cpp = llama_cpp_module()
    llm = llama_cpp.Llama(model_path=model, n_ctx=128, n_threads=min(2, os.cpu_count() or 1), verbose=False)
    text = llm(PROMPT, max_tokens=4, temperature=0.0)["choices"][0]["text"]
    print(json.dumps({"variant": cpu_variant(), "system_info": llama_cpp.llama_print_system_info().decode(),
                      "text": text}))


if __name__ == "__main__":
    _child(sys.argv[1])

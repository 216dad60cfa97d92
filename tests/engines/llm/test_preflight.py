"""The LLM preflight: a child that dies by a signal is reported with the CPU and the fix, never propagated."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engines.llm.llama_cpp_lib import KERNEL_FLAGS, cpu_flags
from engines.llm.preflight import PreflightFailed, run_preflight

ROOT = Path(__file__).resolve().parents[3]


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGILL, signal.SIGABRT])
def test_a_child_killed_by_a_signal_is_reported_with_the_cpu_and_the_fix(sig: signal.Signals) -> None:
    # The child kills itself the way a crashing kernel would; this process must only see an exception.
    code = f"import os, signal; signal.signal({int(sig)}, signal.SIG_DFL); os.kill(os.getpid(), {int(sig)})"
    with pytest.raises(PreflightFailed) as e:
        run_preflight(Path("model.gguf"), command=_child(code))
    msg = str(e.value)
    assert f"crashed ({sig.name})" in msg
    assert "model.gguf" in msg
    assert "make install" in msg and "GGML_NATIVE=OFF" in msg
    for flag in cpu_flags():  # names what this CPU has, e.g. amx_tile on the machines that crashed
        assert flag in msg


def test_a_child_that_fails_without_a_signal_reports_its_exit_code_and_last_line() -> None:
    code = "import sys; print('loading', file=sys.stderr); print('bad magic in model.gguf', file=sys.stderr); " \
           "sys.exit(4)"
    with pytest.raises(PreflightFailed, match=r"failed \(exit 4\).*bad magic in model.gguf"):
        run_preflight(Path("model.gguf"), command=_child(code))


def test_a_child_that_hangs_is_stopped_and_reported() -> None:
    with pytest.raises(PreflightFailed, match="did not finish in 1 s"):
        run_preflight(Path("model.gguf"), command=_child("import time; time.sleep(30)"), timeout_s=1)


def test_the_installed_build_decodes_on_this_cpu() -> None:
    from engines.llm.models import smollm2_gguf_path

    result = run_preflight(smollm2_gguf_path())
    assert result.text.strip()  # it generated something
    if result.variant is not None:  # the portable build: a variant chosen for this CPU, never the AMX one
        assert result.variant != "sapphirerapids"
        assert "AMX" not in result.system_info


def test_cpu_flags_are_a_subset_of_the_kernel_flags_in_order() -> None:
    flags = cpu_flags()
    assert flags == [f for f in KERNEL_FLAGS if f in flags]
    if Path("/proc/cpuinfo").is_file() and "x86" in subprocess.run(["uname", "-m"], capture_output=True,
                                                                     text=True).stdout:
        assert "sse4_2" in flags


def test_analyze_exits_non_zero_with_the_preflight_message_when_the_test_decode_fails(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)  # a GGUF header with nothing behind it: llama.cpp refuses it
    clip = tmp_path / "clip.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(clip), "synth", "0.5", "sine", "220"], check=True)
    proc = subprocess.run([sys.executable, "-m", "xemo.cli", "analyze", str(clip)], cwd=ROOT, capture_output=True,
                          text=True, env={**_env(), "XEMO_LITE__LLM": str(bad)}, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "test decode with llama.cpp of broken.gguf failed" in proc.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("XEMO_")}

"""llama.cpp's OpenMP threads spin briefly at barriers by default, and an operator's own policy is left alone.

Checked through libgomp itself: OMP_DISPLAY_ENV makes it print the values it read when llama.cpp's library loaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engines.llm.llama_cpp_lib import OMP_SPIN_COUNT

pytest.importorskip("llama_cpp")

ROOT = Path(__file__).resolve().parents[3]
LOAD = "from engines.llm.llama_cpp_lib import llama_cpp_module; llama_cpp_module()"


def _gomp_values(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", LOAD], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**base, "OMP_DISPLAY_ENV": "VERBOSE", **env})
    assert out.returncode == 0, out.stderr[-2000:]
    values = dict(re.findall(r"^\s*(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'", out.stderr, re.M))
    assert values, "libgomp printed no settings: is llama.cpp built with OpenMP?\n" + out.stderr[-2000:]
    return values


def test_by_default_the_threads_spin_a_bounded_while_then_sleep() -> None:
    values = _gomp_values()
    assert values["GOMP_SPINCOUNT"] == OMP_SPIN_COUNT
    assert values["OMP_WAIT_POLICY"] == "PASSIVE"  # libgomp's name for any bounded spin


def test_an_operators_wait_policy_wins() -> None:
    assert _gomp_values(OMP_WAIT_POLICY="PASSIVE")["GOMP_SPINCOUNT"] == "0"
    assert _gomp_values(OMP_WAIT_POLICY="ACTIVE")["OMP_WAIT_POLICY"] == "ACTIVE"
    assert _gomp_values(GOMP_SPINCOUNT="500")["GOMP_SPINCOUNT"] == "500"

"""librosa's numba kernels are compiled into their shared cache by one process at a time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HOLD = """
import sys, time
from engines.perception.audio.jit_lock import compile_lock
with compile_lock():
    print("locked", flush=True)
    time.sleep(float(sys.argv[1]))
"""
WARM = """
import time
from engines.perception.audio import laughter, prosody
from engines.perception.audio.jit_lock import compile_lock
t = time.monotonic()
with compile_lock():
    waited = time.monotonic() - t
    prosody.warm_up()
    laughter.warm_up()
print(round(waited, 2), flush=True)
"""


def run(code: str, cache: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_a_second_process_waits_for_the_lock(tmp_path: Path) -> None:
    holder = run(HOLD, tmp_path, "3")
    assert holder.stdout.readline().strip() == "locked"
    t = time.monotonic()
    waiter = run(HOLD, tmp_path, "0")
    assert waiter.stdout.readline().strip() == "locked"
    assert time.monotonic() - t > 1.5  # it got the lock only once the holder let go
    assert holder.wait(30) == 0 and waiter.wait(30) == 0


def test_processes_warming_up_together_share_one_sound_cache(tmp_path: Path) -> None:
    procs = [run(WARM, tmp_path) for _ in range(3)]
    assert [p.wait(300) for p in procs] == [0, 0, 0]  # none died loading another's half-written kernels
    assert list(tmp_path.rglob("*.nbi")), "the kernels were cached"
    late = run(WARM, tmp_path)
    assert late.wait(120) == 0

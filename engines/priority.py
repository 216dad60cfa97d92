"""CPU priority for the work that feeds the LLM: perception stage threads and decoder processes.

Under load the LLM engine is the stage every request waits on, and its steps run on several OpenMP threads that
meet at a barrier after each operation: one of them preempted by a perception thread stalls the others. Running
perception and decoding at a higher nice value lets the scheduler give the engine's threads a core whenever they
want one, while perception still gets every cycle the engine leaves idle; alone on the machine (one request at a
time) nothing changes. Linux's nice value belongs to a thread, so this lowers only the thread that calls it (and
the threads and processes it starts later); elsewhere it does nothing. `lower_process_priority` lowers every
thread a process already has (a decoder process, whose imports have started a BLAS thread pool by then).
"""

from __future__ import annotations

import os
import sys
import threading


def lower_thread_priority(nice: int, tid: int | None = None) -> int | None:
    """Raise the nice value of the calling thread (or of thread `tid` of this process) to `nice`, never lowering
    it (that needs privileges). Returns the nice value now in effect, or None where it cannot be set."""
    if not sys.platform.startswith("linux"):
        return None
    tid = threading.get_native_id() if tid is None else tid
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        if nice > now:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, nice))
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError:  # a sandbox that forbids it: run at the priority we have
        return None


def lower_process_priority(nice: int) -> None:
    """`lower_thread_priority` for every thread this process has now."""
    if not sys.platform.startswith("linux"):
        return
    for tid in os.listdir("/proc/self/task"):
        lower_thread_priority(nice, int(tid))

"""The decoder worker process: imports the decoders once, then decodes one job at a time for its parent.

Run as `python -m engines.ingest.worker JOB_FD REPLY_FD MEMORY_MB JOB_ROOT NICE` by engines/ingest/pool.py, never by
hand.
Protocol: one JSON line per job in, one JSON line per reply out; arrays travel as .npy files in the job's
private directory (one write, one read, no pickling through the pipe). The process dies with its parent, has a
capped address space, is jailed to its job root where Landlock exists (engines/ingest/sandbox.py), and exits when
its job pipe closes, so a hung, leaking or exploited decoder costs only itself.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from engines.priority import lower_process_priority


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the parent dies, even if it is stuck inside a decoder."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass  # not Linux: the closed job pipe still ends the loop


def _cap_memory(mb: int) -> None:
    if mb > 0:
        limit = mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def handle(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from engines import errors
    from engines.ingest.decode import process
    from xemo.settings import IngestSettings

    try:
        meta, arrays = process(job, IngestSettings(**job["settings"]))
    except errors.MediaError as e:
        return {"ok": False, "type": type(e).__name__, "message": e.message}
    except MemoryError:
        return {
            "ok": False,
            "type": "TooLarge",
            "message": "decoding this file needs more memory than allowed; upload a shorter or smaller clip",
        }
    except Exception as e:  # any other decoder failure means the file is not something we can read
        return {
            "ok": False,
            "type": "CorruptMedia",
            "message": f"the file could not be decoded ({type(e).__name__}); it may be damaged: re-export it",
        }
    out = Path(job["dir"])
    try:
        for name, arr in arrays.items():
            np.save(out / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    except OSError as e:  # our side (temp disk full), not the upload's fault
        return {
            "ok": False,
            "type": "ModelError",
            "message": f"the server could not store decoded media ({e.strerror})",
        }
    return {"ok": True, "meta": meta, "arrays": sorted(arrays)}


def _jail(job_root: str) -> bool:
    """Read the Python runtime and our own code, read/write the job root; every other file is out of reach."""
    from engines.ingest import sandbox

    here = Path(__file__).resolve().parents[2]  # holds the `engines` and `xemo` packages
    read = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        "/usr",
        "/lib",
        "/lib64",
        "/etc/ld.so.cache",
        str(here / "engines"),
        str(here / "xemo"),
        "/proc/self",
        "/sys/devices/system/cpu",
        "/dev/null",
        "/dev/urandom",
    }
    return sandbox.restrict(sorted(read), [job_root])


def main(argv: list[str]) -> int:
    job_fd, reply_fd, memory_mb, job_root, nice = int(argv[1]), int(argv[2]), int(argv[3]), argv[4], int(argv[5])
    _die_with_parent()
    lower_process_priority(nice)  # before FFmpeg's threads and the audio thread start, so they inherit it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent; it decides what to do with us
    # Warm imports: the point of a pre-started worker is that no call pays for these.
    import av
    import decord  # noqa: F401
    import numpy  # noqa: F401

    import engines.ingest.decode  # noqa: F401

    av.logging.set_level(None)  # FFmpeg's own log lines for damaged files are noise here
    _cap_memory(memory_mb)
    jailed = _jail(job_root)
    reply = os.fdopen(reply_fd, "w", buffering=1)
    reply.write(json.dumps({"ready": True, "sandbox": jailed}) + "\n")
    with os.fdopen(job_fd, "r") as jobs:
        for line in jobs:
            reply.write(json.dumps(handle(json.loads(line))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

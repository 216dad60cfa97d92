"""One process at a time compiles librosa's numba kernels into their shared on-disk cache.

librosa's kernels are `cache=True`: the first process compiles them (about 15 s on 2 cores) and writes them
next to librosa's sources, and later processes load them in about 1 s. Numba numbers a function's cache files
per process, so two processes compiling at once (two replicas starting together, a test starting two servers)
can leave an index entry pointing at the other one's machine code, and every later process that loads it dies
with a segmentation fault. Warm-up therefore runs under an exclusive file lock: the first process compiles and
writes, the others wait and then only read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def lock_path() -> Path:
    """One lock per cache location: NUMBA_CACHE_DIR when set, else the librosa installation's own folders."""
    where = os.environ.get("NUMBA_CACHE_DIR")
    if not where:
        import librosa

        where = str(Path(librosa.__file__).resolve().parent)
    digest = hashlib.sha256(where.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"xemo-numba-{digest}.lock"


@contextlib.contextmanager
def compile_lock() -> Iterator[None]:
    with open(lock_path(), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

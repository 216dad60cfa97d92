"""Warm decoder processes owned by this (server) process, each killed and respawned on timeout or crash.

decord can deadlock holding the GIL and leaks memory; FFmpeg can crash on hostile input. Neither may hang or kill
the caller, so decoding never runs in-process: a job goes over a pipe to a pre-started worker
(engines/ingest/worker.py) and the caller waits with `select` against a hard deadline. A worker that misses it is
SIGKILLed and replaced at once, so the next call finds a warm one again.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engines.errors import CorruptMedia, DecodeTimeout, ModelError, Overloaded

_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the `engines` package
_ENV_KEPT = {
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "MALLOC_ARENA_MAX",
    "OMP_NUM_THREADS",
}
STARTUP_TIMEOUT_S = 60.0  # imports on a cold, busy machine; not part of any request's decode budget
RECYCLE_JOBS = 500  # a worker is replaced after this many jobs...
RECYCLE_RSS_FRACTION = 0.5  # ...or once its resident memory passes this share of its cap


class WorkerCrashed(CorruptMedia):
    """The worker process died mid-job (segfault, abort, killed); the caller may retry with another decoder."""


class _Spawner:
    """Starts worker processes from one long-lived thread.

    The worker asks the kernel to SIGKILL it when its parent goes (PR_SET_PDEATHSIG), and Linux ties that to the
    *thread* that forked it: a worker forked from a request thread (anyio reaps idle ones) would die with it.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Future[subprocess.Popen[bytes]], list[str], dict[str, Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="xemo-decoder-spawner", daemon=True)
                self._thread.start()
        fut: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((fut, argv, kw))
        return fut.result()

    def _loop(self) -> None:
        while True:
            fut, argv, kw = self._jobs.get()
            try:
                fut.set_result(subprocess.Popen(argv, **kw))
            except BaseException as e:
                fut.set_exception(e)


_spawner = _Spawner()


class DecoderWorker:
    """One worker process and its two pipes."""

    def __init__(self, memory_mb: int, root: Path, max_jobs: int = RECYCLE_JOBS, nice: int = 0) -> None:
        self.memory_mb = memory_mb
        self.nice = nice
        self.root = root
        self.sandboxed = False
        self.max_jobs = max_jobs
        self.proc: subprocess.Popen[bytes] | None = None
        self._spawn()

    def _spawn(self) -> None:
        job_r, job_w = os.pipe()
        rep_r, rep_w = os.pipe()
        # Only what the runtime needs: the server's environment (API keys, credentials) stays out of reach.
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEPT}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        env.setdefault("MALLOC_ARENA_MAX", "2")  # fewer 64 MB arena reservations under the address-space cap
        argv = [
            sys.executable,
            "-m",
            "engines.ingest.worker",
            str(job_r),
            str(rep_w),
            str(self.memory_mb),
            str(self.root),
            str(self.nice),
        ]
        try:
            self.proc = _spawner.popen(
                argv,
                pass_fds=(job_r, rep_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
        finally:
            os.close(job_r)
            os.close(rep_w)
        self._tx, self._rx = job_w, rep_r
        self._buf = b""
        self._ready = False
        self.started = time.monotonic()
        self.jobs = 0

    def _close_fds(self) -> None:
        for fd in (self._tx, self._rx):
            try:
                os.close(fd)
            except OSError:
                pass

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self._close_fds()

    def respawn(self) -> None:
        self.kill()
        self._spawn()

    def close(self) -> None:
        """Polite stop: closing the job pipe ends the worker's loop; kill if it does not go."""
        self._close_fds()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _readline(self, deadline: float) -> bytes | None:
        """One reply line; None on timeout, b'' if the worker died."""
        while b"\n" not in self._buf:
            # past the deadline, still take a reply already waiting in the pipe (a worker first used long after
            # it started has its ready line there): only an empty pipe times out
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._rx], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._rx, 1 << 16)
            if not chunk:
                return b""
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def wait_ready(self) -> None:
        if self._ready:
            return
        line = self._readline(self.started + STARTUP_TIMEOUT_S)
        if not line:
            self.respawn()
            raise ModelError("the media decoder process failed to start; check that PyAV and decord are installed")
        self.sandboxed = bool(json.loads(line).get("sandbox"))
        self._ready = True

    def call(self, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        self.wait_ready()
        try:
            os.write(self._tx, (json.dumps(job) + "\n").encode())
        except BrokenPipeError:  # died while idle (e.g. killed from outside): replace it and try once more
            self.respawn()
            self.wait_ready()
            os.write(self._tx, (json.dumps(job) + "\n").encode())
        line = self._readline(time.monotonic() + timeout_s)
        if line is None:
            self.respawn()
            raise DecodeTimeout(
                f"decoding took longer than {timeout_s:g} s and was stopped; the file may be "
                "damaged or too complex: re-encode it (e.g. H.264, 720p) and upload again"
            )
        if line == b"":
            self.respawn()
            raise WorkerCrashed(
                "the decoder crashed on this file; it is probably damaged or malformed: re-export it and upload again"
            )
        self.jobs += 1
        if self.jobs >= self.max_jobs or self.rss_mb() > self.memory_mb * RECYCLE_RSS_FRACTION:
            self.respawn()  # decord leaks: start fresh; the replacement warms up while the caller goes on
        return json.loads(line)

    def rss_mb(self) -> float:
        try:
            pages = int(Path(f"/proc/{self.proc.pid}/statm").read_text().split()[1])  # type: ignore[union-attr]
        except (OSError, IndexError, ValueError, AttributeError):
            return 0.0
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class DecoderPool:
    """A fixed set of warm workers; a call borrows one for the duration of one decode."""

    def __init__(self, size: int, memory_mb: int, nice: int = 0) -> None:
        self.key = (size, memory_mb, nice)
        # Private (0700) root for job directories: the only tree the workers may touch.
        self.root = Path(tempfile.mkdtemp(prefix="xemo-ingest-"))
        self._idle: queue.Queue[DecoderWorker] = queue.Queue()
        self._all = [DecoderWorker(memory_mb, self.root, nice=nice) for _ in range(max(1, size))]
        for w in self._all:
            self._idle.put(w)

    def run(self, job: dict[str, Any], timeout_s: float, wait_s: float) -> dict[str, Any]:
        try:
            worker = self._idle.get(timeout=wait_s)
        except queue.Empty:
            raise Overloaded("all media decoders are busy; retry shortly", retry_after_s=1.0) from None
        try:
            return worker.call(job, timeout_s)
        finally:
            self._idle.put(worker)

    def wait_ready(self) -> None:
        for w in self._all:
            w.wait_ready()

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._all if w.proc is not None]

    def sandboxed(self) -> list[bool]:
        """Whether each (ready) worker runs inside its Landlock jail."""
        self.wait_ready()
        return [w.sandboxed for w in self._all]

    def alive(self) -> list[bool]:
        return [w.proc is not None and w.proc.poll() is None for w in self._all]

    def close(self) -> None:
        for w in self._all:
            w.close()
        shutil.rmtree(self.root, ignore_errors=True)


_lock = threading.Lock()
_pools: dict[tuple[int, int, int], DecoderPool] = {}


def get_pool(size: int, memory_mb: int, nice: int = 0) -> DecoderPool:
    """The process-wide pool for these settings, started on first use (or by `warmup`).

    One per (workers, memory cap, nice value): a server has exactly one; tests that try other caps get their own
    without pulling workers from under a pool that another thread is using.
    """
    key = (size, memory_mb, nice)
    with _lock:
        if key not in _pools:
            _pools[key] = DecoderPool(size, memory_mb, nice)
        return _pools[key]


def shutdown() -> None:
    """Stop every worker and remove the job roots (also run at interpreter exit)."""
    with _lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()


atexit.register(shutdown)

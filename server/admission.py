"""Admission control: a bounded waiting room in front of a fixed number of running slots, and per-key token buckets.

A request enters at HTTP receipt (`enter`, which refuses at once with 503 + Retry-After when
`max_running + max_queue` requests are already in flight, or while draining), waits for a running slot
(`Ticket.start`, FIFO), and gives it back exactly once (`Ticket.release`) however it ends, so a cancelled request
frees its slot as soon as its handler unwinds.
"""

from __future__ import annotations

import asyncio
import time

from engines.errors import Overloaded
from server.errors import Draining, RateLimited
from server.metrics import Metrics


class Admission:
    def __init__(
        self, max_running: int, max_queue: int, retry_after_s: float = 1.0, metrics: Metrics | None = None
    ) -> None:
        self.max_running = max(1, max_running)
        self.max_queue = max(0, max_queue)
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.running = 0
        self.waiting = 0
        self.draining = False
        self._slots = asyncio.Semaphore(self.max_running)
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self.running + self.waiting

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.max_running + self.max_queue

    def enter(self) -> Ticket:
        if self.draining:
            raise Draining(
                "server is draining for shutdown; retry on another instance", retry_after_s=self.retry_after_s
            )
        if self.saturated:
            raise Overloaded(
                f"server is at capacity ({self.max_running} running, {self.max_queue} queued); retry later",
                retry_after_s=self.retry_after_s,
            )
        self.waiting += 1
        self._changed()
        return Ticket(self)

    async def wait_idle(self, timeout: float) -> bool:
        """True once nothing is in flight; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def _changed(self) -> None:
        if self.in_flight == 0:
            self._idle.set()
        else:
            self._idle.clear()
        if self.metrics is not None:
            self.metrics.requests_running.set(self.running)
            self.metrics.requests_waiting.set(self.waiting)


class Ticket:
    def __init__(self, admission: Admission) -> None:
        self._a = admission
        self.state = "waiting"  # -> running -> released
        self.queue_time_s = 0.0

    async def start(self) -> None:
        a = self._a
        t0 = time.perf_counter()
        await a._slots.acquire()
        if self.state != "waiting":  # released while waiting (cancelled): hand the slot straight back
            a._slots.release()
            return
        self.queue_time_s = time.perf_counter() - t0
        self.state = "running"
        a.waiting -= 1
        a.running += 1
        a._changed()
        if a.metrics is not None:
            a.metrics.queue_time.observe(self.queue_time_s)

    def release(self) -> None:
        a = self._a
        if self.state == "running":
            a.running -= 1
            a._slots.release()
        elif self.state == "waiting":
            a.waiting -= 1
        else:
            return
        self.state = "released"
        a._changed()


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = max(rate_per_s, 1e-9)
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One in-memory bucket per API key (bounded: keys come from the settings, never from clients)."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key_id: str) -> None:
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = TokenBucket(self.rate, self.burst)
        wait = bucket.take()
        if wait > 0:
            raise RateLimited(
                f"rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded for this key", retry_after_s=wait
            )

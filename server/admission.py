"""Admission control: a bounded waiting room in front of a fixed number of running slots (per-key rate limits are
in server/rate_limit.py).

A request enters at HTTP receipt (`enter`, which refuses at once with 503 + Retry-After when
`max_running + max_queue` requests are already in flight, or while draining), waits for a running slot
(`Ticket.start`, FIFO), and gives it back exactly once (`Ticket.release`) however it ends, so a cancelled request
frees its slot as soon as its handler unwinds.
"""

from __future__ import annotations

import asyncio
import time

from engines.errors import Overloaded
from server.errors import Draining
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

"""Triton-style dynamic batcher: one per neural stage, in front of `Stage.run_batch`.

Calls queue up (bounded: a full queue raises Overloaded at once); a single loop task takes the oldest items,
waits at most `max_queue_delay_ms` after the oldest arrived for the batch to fill up to `max_batch_size`, and
runs the batch in the stage's own worker thread, never on the event loop. One thread per stage: stages run
concurrently with each other (pipelining) but a stage's model is never entered by two threads. While a batch
runs, new calls accumulate, so batches form under load even with a zero delay. Items whose request was
cancelled are dropped before they run; items past their deadline fail with Timeout. If a batch of several
fails, its items are retried one by one so one bad input cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from engines.errors import Overloaded, Timeout
from engines.pipeline import Stage
from engines.priority import lower_thread_priority
from server.metrics import Metrics

log = logging.getLogger("xemo.batching")


@dataclass
class _Item:
    value: Any
    future: asyncio.Future
    deadline: float | None  # loop.time() based
    enqueued: float


class DynamicBatcher:
    def __init__(
        self,
        stage: Stage,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue: int,
        metrics: Metrics | None = None,
        name: str | None = None,
        nice: int = 0,
    ) -> None:
        self.stage = stage
        self.name = name or stage.name
        self.max_batch_size = max(1, max_batch_size)
        self.max_queue_delay_s = max(0.0, max_queue_delay_ms) / 1000.0
        self.max_queue = max(1, max_queue)
        self.metrics = metrics
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        # the stage's thread (and the threads it starts) at `nice`: it yields the CPU to the LLM engine under load
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"xemo-{self.name}",
                                            initializer=lower_thread_priority, initargs=(nice,))
        self._task: asyncio.Task | None = None
        self.batches_run = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for it in self._queue:
            if not it.future.done():
                it.future.set_exception(Overloaded("server is shutting down"))
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, value: Any, deadline: float | None = None) -> Any:
        """Run `value` through the stage as part of some batch; `deadline` is a loop.time() instant."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if deadline is not None and now >= deadline:
            raise Timeout(f"request deadline passed before stage {self.name!r}")
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"stage {self.name!r} queue is full", retry_after_s=1.0)
        fut = loop.create_future()
        self._queue.append(_Item(value, fut, deadline, now))
        self._wake.set()
        try:
            if deadline is None:
                return await fut
            # shield: a timeout must not cancel the shared future; the loop drops it when it sees it expired.
            return await asyncio.wait_for(asyncio.shield(fut), timeout=deadline - now)
        except TimeoutError:
            fut.cancel()
            raise Timeout(f"request deadline passed in stage {self.name!r}") from None
        except asyncio.CancelledError:
            fut.cancel()  # the loop skips cancelled items, so the slot frees without running
            raise

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.max_queue_delay_s > 0 and self._live() < self.max_batch_size:
                until = self._queue[0].enqueued + self.max_queue_delay_s
                while self._live() < self.max_batch_size and loop.time() < until:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=until - loop.time())
                    except TimeoutError:
                        break
            batch = self._take(loop.time())
            if batch:
                await self._run(batch)

    def _live(self) -> int:
        return sum(1 for it in self._queue if not it.future.done())

    def _take(self, now: float) -> list[_Item]:
        batch: list[_Item] = []
        while self._queue and len(batch) < self.max_batch_size:
            it = self._queue.popleft()
            if it.future.done():  # cancelled or timed out while queued
                continue
            if it.deadline is not None and now >= it.deadline:
                it.future.set_exception(Timeout(f"request deadline passed while queued for {self.name!r}"))
                continue
            batch.append(it)
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        values = [it.value for it in batch]
        t0 = time.perf_counter()
        try:
            outs = await loop.run_in_executor(self._executor, self.stage.run_batch, values)
            if len(outs) != len(values):
                raise RuntimeError(f"stage {self.name!r} returned {len(outs)} results for {len(values)} items")
        except Exception as exc:
            self._observe(len(batch), time.perf_counter() - t0)
            if len(batch) > 1:
                log.warning("batch of %d failed in %s; retrying items one by one", len(batch), self.name)
                for it in batch:
                    if not it.future.done():
                        await self._run([it])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        self._observe(len(batch), time.perf_counter() - t0)
        self.batches_run += 1
        for it, out in zip(batch, outs, strict=True):
            if not it.future.done():
                it.future.set_result(out)

    def _observe(self, size: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.batch_size.labels(stage=self.name).observe(size)
            self.metrics.stage_duration.labels(stage=self.name).observe(seconds)

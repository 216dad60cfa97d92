"""The dynamic batcher: batches form under load, limits hold, work runs off the loop, cancelled items never run."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import numpy as np
import pytest

from engines.errors import Overloaded, Timeout
from engines.pipeline import Stage
from server.batching import DynamicBatcher
from server.metrics import Metrics


class MatmulStage(Stage):
    """Real batched work: one matrix product over the stacked batch; records what it saw."""

    name = "matmul"
    max_batch_size = 8

    def __init__(self, delay_s: float = 0.0) -> None:
        self.w = np.arange(16, dtype=np.float32).reshape(4, 4)
        self.delay_s = delay_s
        self.sizes: list[int] = []
        self.seen: list[float] = []
        self.threads: set[str] = set()

    def run_batch(self, items: list[np.ndarray]) -> list[np.ndarray]:
        self.threads.add(threading.current_thread().name)
        self.sizes.append(len(items))
        for x in items:
            if not np.isfinite(x).all():
                raise ValueError("non-finite input")
            self.seen.append(float(x[0]))
        time.sleep(self.delay_s)  # stands for model time, so later calls queue up behind a running batch
        out = np.stack(items) @ self.w
        return list(out)


def vec(i: float) -> np.ndarray:
    return np.full(4, i, dtype=np.float32)


def run(coro):
    return asyncio.run(coro)


def test_batches_form_under_load_and_results_keep_order() -> None:
    stage = MatmulStage(delay_s=0.05)

    async def main() -> list[np.ndarray]:
        b = DynamicBatcher(stage, max_batch_size=4, max_queue_delay_ms=0, max_queue=64, metrics=Metrics())
        b.start()
        try:
            return await asyncio.gather(*(b.submit(vec(i)) for i in range(10)))
        finally:
            await b.stop()

    outs = run(main())
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out, vec(i) @ stage.w)
    assert max(stage.sizes) == 4 and sum(stage.sizes) == 10
    assert len(stage.sizes) < 10  # batched, not one by one
    assert all(not n.startswith("MainThread") for n in stage.threads)


def test_queue_delay_gathers_staggered_calls_into_one_batch() -> None:
    stage = MatmulStage()

    async def main() -> None:
        b = DynamicBatcher(stage, max_batch_size=8, max_queue_delay_ms=200, max_queue=64)
        b.start()

        async def later(i: int) -> np.ndarray:
            await asyncio.sleep(0.01 * i)
            return await b.submit(vec(i))

        await asyncio.gather(*(later(i) for i in range(3)))
        await b.stop()

    run(main())
    assert stage.sizes == [3]


def test_full_queue_rejects_at_once() -> None:
    stage = MatmulStage(delay_s=0.2)

    async def main() -> None:
        b = DynamicBatcher(stage, max_batch_size=1, max_queue_delay_ms=0, max_queue=2)
        b.start()
        first = asyncio.ensure_future(b.submit(vec(0)))
        await asyncio.sleep(0.05)  # the first is running; two more fill the queue
        queued = [asyncio.ensure_future(b.submit(vec(i))) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await b.submit(vec(3))
        await asyncio.gather(first, *queued)
        await b.stop()

    run(main())


def test_deadline_fails_with_timeout_and_cancelled_items_never_run() -> None:
    stage = MatmulStage(delay_s=0.2)

    async def main() -> None:
        b = DynamicBatcher(stage, max_batch_size=1, max_queue_delay_ms=0, max_queue=16)
        b.start()
        loop = asyncio.get_running_loop()
        blocker = asyncio.ensure_future(b.submit(vec(0)))
        await asyncio.sleep(0.02)
        with pytest.raises(Timeout):
            await b.submit(vec(1), deadline=loop.time() + 0.05)
        doomed = asyncio.ensure_future(b.submit(vec(2)))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await blocker
        assert await b.submit(vec(3)) is not None
        await b.stop()

    run(main())
    assert 1.0 not in stage.seen and 2.0 not in stage.seen
    assert stage.seen == [0.0, 3.0]


def test_one_bad_item_does_not_fail_its_batch() -> None:
    stage = MatmulStage(delay_s=0.05)

    async def main() -> list:
        b = DynamicBatcher(stage, max_batch_size=4, max_queue_delay_ms=50, max_queue=16)
        b.start()
        items = [vec(1), vec(float("nan")), vec(3)]
        outs = await asyncio.gather(*(b.submit(x) for x in items), return_exceptions=True)
        await b.stop()
        return outs

    outs = run(main())
    assert isinstance(outs[1], ValueError)
    np.testing.assert_allclose(outs[0], vec(1) @ stage.w)
    np.testing.assert_allclose(outs[2], vec(3) @ stage.w)
    assert stage.sizes[0] == 3  # tried as one batch first


def test_metrics_record_batch_sizes_per_stage() -> None:
    stage = MatmulStage(delay_s=0.02)
    m = Metrics()

    async def main() -> None:
        b = DynamicBatcher(stage, max_batch_size=8, max_queue_delay_ms=30, max_queue=16, metrics=m)
        b.start()
        await asyncio.gather(*(b.submit(vec(i)) for i in range(5)))
        await b.stop()

    run(main())
    text = m.render().decode()
    assert 'xemo_batch_size_sum{stage="matmul"} 5.0' in text
    assert 'xemo_stage_duration_seconds_count{stage="matmul"}' in text


class NiceStage(Stage):
    """Reports the nice value of the thread it runs on, and of a thread that thread starts."""

    name = "nice"

    def run_batch(self, items: list[int]) -> list[tuple[int, int]]:
        own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        t.start()
        t.join()
        return [(own, seen[0]) for _ in items]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_a_stage_runs_below_the_callers_priority_and_so_do_the_threads_it_starts() -> None:
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def main(nice: int) -> tuple[int, int]:
        b = DynamicBatcher(NiceStage(), max_batch_size=1, max_queue_delay_ms=0, max_queue=4, nice=nice)
        b.start()
        try:
            return await b.submit(0)
        finally:
            await b.stop()

    assert run(main(max(base, 7))) == (max(base, 7), max(base, 7))
    assert run(main(0)) == (base, base)  # 0: as the caller, never above it
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the caller itself is untouched

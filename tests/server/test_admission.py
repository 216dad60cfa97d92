"""Admission control: bounded waiting room, FIFO running slots, exactly-once release, draining, token buckets."""

from __future__ import annotations

import asyncio

import pytest

from engines.errors import Overloaded
from server.admission import Admission
from server.errors import Draining, RateLimited, to_api_error
from server.metrics import Metrics
from server.rate_limit import LocalRateLimiter


def test_capacity_is_running_plus_queue_and_full_rejects_at_once() -> None:
    async def main() -> None:
        m = Metrics()
        a = Admission(max_running=1, max_queue=1, retry_after_s=2.0, metrics=m)
        t1, t2 = a.enter(), a.enter()
        with pytest.raises(Overloaded) as exc:
            a.enter()
        err = to_api_error(exc.value)
        assert err.status == 503 and err.headers() == {"Retry-After": "2"} and err.outcome == "rejected_overload"
        await t1.start()
        assert (a.running, a.waiting) == (1, 1)
        start2 = asyncio.ensure_future(t2.start())
        await asyncio.sleep(0.01)
        assert not start2.done()  # only one running slot
        t1.release()
        t1.release()  # idempotent: a double release must not free a second slot
        await asyncio.wait_for(start2, 1)
        assert (a.running, a.waiting) == (1, 0)
        assert "xemo_requests_running 1.0" in m.render().decode()
        t2.release()
        assert a.in_flight == 0 and await a.wait_idle(0.1)

    asyncio.run(main())


def test_a_waiting_request_that_leaves_frees_its_place() -> None:
    async def main() -> None:
        a = Admission(max_running=1, max_queue=1)
        t1 = a.enter()
        await t1.start()
        t2 = a.enter()
        waiter = asyncio.ensure_future(t2.start())
        await asyncio.sleep(0.01)
        waiter.cancel()
        t2.release()
        assert a.waiting == 0
        t3 = a.enter()  # the place is free again
        t1.release()
        await asyncio.wait_for(t3.start(), 1)
        assert a.running == 1

    asyncio.run(main())


def test_draining_refuses_new_work_and_waits_for_in_flight() -> None:
    async def main() -> None:
        a = Admission(max_running=2, max_queue=2)
        t = a.enter()
        await t.start()
        a.draining = True
        with pytest.raises(Draining):
            a.enter()
        assert not await a.wait_idle(0.05)
        asyncio.get_running_loop().call_later(0.02, t.release)
        assert await a.wait_idle(1.0)

    asyncio.run(main())


def test_token_bucket_allows_burst_then_limits_with_retry_after() -> None:
    rl = LocalRateLimiter(rate_per_s=0.5, burst=3)
    for _ in range(3):
        rl.take("k1")
    with pytest.raises(RateLimited) as exc:
        rl.take("k1")
    err = to_api_error(exc.value)
    assert err.status == 429 and int(err.headers()["Retry-After"]) >= 1
    rl.take("k2")  # buckets are per key

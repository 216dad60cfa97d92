"""The Redis-backed parts on their own, against the real Redis at 127.0.0.1:6379 (a unique key prefix per test)
or a private redis-server: the shared rate limit and what it does when Redis cannot be reached, the shared result
cache's bounds and its bypass of a hung Redis, and the webhook allow-list and delivery of async jobs."""

from __future__ import annotations

import asyncio
import http.server
import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from servers import RedisProcess, free_port

from server.errors import InvalidField, RateLimited
from server.job_queue import JobQueue
from server.metrics import Metrics
from server.rate_limit import RedisRateLimiter
from server.redis_state import RedisState, RedisUnavailable
from server.result_cache import RedisResultCache
from xemo.settings import load_settings

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"xemo-test-{uuid.uuid4().hex[:8]}"
    yield p
    r = redis.Redis.from_url(URL)  # only this test's keys, never FLUSHDB on the shared Redis
    keys = list(r.scan_iter(f"{p}:*"))
    if keys:
        r.delete(*keys)


@pytest.fixture(scope="module", autouse=True)
def needs_redis() -> None:
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379 (.ci/run starts one)")


def state(url: str, prefix: str, **redis_cfg: Any) -> RedisState:
    s = load_settings(redis_url=url, redis={"key_prefix": prefix, "socket_timeout_s": 2, **redis_cfg})
    return RedisState(url, s, Metrics())


def test_two_limiters_share_one_budget(prefix: str) -> None:
    async def main() -> None:
        a, b = state(URL, prefix), state(URL, prefix)  # as two processes would
        la, lb = (RedisRateLimiter(x, rate_per_s=0.5, burst=4, on_error="local") for x in (a, b))
        for limiter in (la, lb, la, lb):
            await limiter.check("k1")
        for limiter in (la, lb):
            with pytest.raises(RateLimited) as exc:
                await limiter.check("k1")
            assert 1.0 <= exc.value.retry_after_s <= 2.0  # one token every 2 s
        await la.check("k2")  # per key
        await a.close()
        await b.close()

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["local", "open", "closed"])
def test_limits_when_redis_is_unreachable(mode: str, prefix: str) -> None:
    async def main() -> None:
        down = state(f"redis://127.0.0.1:{free_port()}/0", prefix)  # nothing listens there
        limiter = RedisRateLimiter(down, rate_per_s=0.01, burst=2, on_error=mode)
        outcomes = []
        for _ in range(4):
            try:
                await limiter.check("k")
                outcomes.append("ok")
            except RateLimited:
                outcomes.append("429")
            except RedisUnavailable as e:
                outcomes.append(f"{e.http_status}")
        expected = {"local": ["ok", "ok", "429", "429"], "open": ["ok"] * 4, "closed": ["503"] * 4}[mode]
        assert outcomes == expected
        assert down.status()["status"] == "degraded"
        assert down.metrics.redis_errors.labels(op="rate_limit")._value.get() >= 1
        await down.close()

    asyncio.run(main())


def test_the_shared_cache_is_bounded_and_expires(prefix: str) -> None:
    async def main() -> None:
        s = state(URL, prefix)
        cache = RedisResultCache(s, entries=2, ttl_s=0.5, max_entry_bytes=2000)
        for k in "abc":
            await cache.put(k, [{"type": "done", "answer": {"id": k}}])
        assert await cache.get("a") is None and await cache.get("c") == [{"type": "done", "answer": {"id": "c"}}]
        await cache.put("big", [{"type": "token", "text": "x" * 5000}])  # over the entry size bound: not kept
        assert await cache.get("big") is None
        await asyncio.sleep(0.7)
        assert await cache.get("c") is None  # past the time to live
        await s.close()

    asyncio.run(main())


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def queue_for(prefix: str, allowed: list[str]) -> tuple[JobQueue, RedisState]:
    settings = load_settings(
        redis_url=URL, redis={"key_prefix": prefix}, jobs={"webhook_allowed_hosts": allowed, "webhook_timeout_s": 5}
    )
    s = RedisState(URL, settings, Metrics())
    fake_state = SimpleNamespace(settings=settings, metrics=s.metrics)
    return JobQueue(fake_state, s), s  # type: ignore[arg-type]


def test_webhooks_only_to_allowed_hosts(prefix: str) -> None:
    closed, _ = queue_for(prefix, [])
    with pytest.raises(InvalidField, match="disabled"):
        closed.check_callback("http://127.0.0.1:8080/hook")
    assert closed.check_callback(None) == "" and closed.check_callback("") == ""
    q, _ = queue_for(prefix, ["hooks.example.com", "127.0.0.1:9999"])
    assert q.check_callback("https://hooks.example.com/x") == "https://hooks.example.com/x"
    assert q.check_callback("http://127.0.0.1:9999/x") == "http://127.0.0.1:9999/x"
    for bad in (
        "http://127.0.0.1:9998/x",  # the port is part of that entry
        "http://evil.example.com/x",
        "http://user:pw@hooks.example.com/x",
        "file:///etc/passwd",
        "gopher://hooks.example.com/",
        "http://[::1/x",
    ):
        with pytest.raises(InvalidField):
            q.check_callback(bad)


def test_a_finished_job_is_posted_to_its_allowed_callback(prefix: str) -> None:
    port = free_port()
    httpd = http.server.HTTPServer(("127.0.0.1", port), _Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Hook.received.clear()
    try:

        async def main() -> None:
            q, s = queue_for(prefix, [f"127.0.0.1:{port}"])
            job_id = uuid.uuid4().hex
            now = time.time()
            await s.client.hset(
                q.hash_key(job_id),
                mapping={
                    "owner": "o",
                    "status": "done",
                    "attempts": 1,
                    "answer": json.dumps({"explanation": "x"}),
                    "created_at": now,
                    "updated_at": now,
                },
            )
            await q._deliver("o", job_id, f"http://127.0.0.1:{port}/hook")
            await s.close()
            assert _Hook.received == [
                {
                    "id": job_id,
                    "status": "done",
                    "attempts": 1,
                    "created_at": now,
                    "updated_at": now,
                    "answer": {"explanation": "x"},
                }
            ]

        asyncio.run(main())
    finally:
        httpd.shutdown()


def test_a_hung_redis_is_bypassed_then_used_again(tmp_path: Path) -> None:
    """SIGSTOP freezes a private redis-server with its connections open: commands time out instead of failing
    fast. The cache then answers RedisUnavailable (a bypass for the caller), and works again once Redis resumes."""
    private = RedisProcess(tmp_path / "redis.log")
    try:

        async def main() -> None:
            s = state(private.url, "hung", socket_timeout_s=0.3, retry_interval_s=0.3)
            s.start()  # the background ping notices the recovery
            cache = RedisResultCache(s, entries=4, ttl_s=60, max_entry_bytes=10_000)
            await cache.put("k", [{"type": "done"}])
            private.proc.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(RedisUnavailable):
                    await cache.get("k")
                assert s.status()["status"] == "degraded"
                assert s.metrics.redis_errors.labels(op="cache_get")._value.get() == 1
            finally:
                private.proc.send_signal(signal.SIGCONT)
            for _ in range(100):  # bounded: the ping loop clears the breaker within a retry interval or two
                if s.status()["status"] == "ok":
                    break
                await asyncio.sleep(0.1)
            assert await cache.get("k") == [{"type": "done"}]
            await s.close()

        asyncio.run(main())
    finally:
        private.stop()

"""The server's connection to Redis (`redis_url`): short timeouts, a circuit breaker, a background ping, metrics.

Everything the processes of one deployment share (result cache, rate limits, async jobs) goes through
`RedisState.run`. A command that fails or exceeds `redis.socket_timeout_s` counts in `xemo_redis_errors_total`,
and Redis is then skipped for `redis.retry_interval_s`: callers get `RedisUnavailable` at once, without touching
the network, so a dead or slow Redis costs a request nothing beyond that first timeout. A background ping every
`retry_interval_s` clears the breaker as soon as Redis answers again; `/readyz` reports the state, never fails on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from engines.errors import Overloaded
from server.metrics import Metrics
from xemo.settings import Settings

log = logging.getLogger("xemo.redis")
T = TypeVar("T")

# Longest BLOCK of a blocking read (job queue, job event streams); that client's socket timeout allows for it.
BLOCK_MS = 1000


class RedisUnavailable(Overloaded):
    """Redis is down, slow or skipped after a recent failure (503 + Retry-After where an endpoint needs it)."""

    type = "redis_unavailable"


class RedisState:
    def __init__(self, url: str, settings: Settings, metrics: Metrics) -> None:
        cfg = settings.redis
        self.cfg = cfg
        self.metrics = metrics
        self.prefix = cfg.key_prefix
        common: dict[str, Any] = {
            "socket_connect_timeout": cfg.connect_timeout_s,
            "retry": Retry(NoBackoff(), 0),  # one try: the breaker, not a retry loop, handles a dead Redis
            "retry_on_timeout": False,
            "health_check_interval": 0,
        }
        self.client: Redis = Redis.from_url(url, socket_timeout=cfg.socket_timeout_s, **common)
        # Blocking reads and multi-MB job uploads need longer than one quick command.
        self.slow: Redis = Redis.from_url(url, socket_timeout=cfg.socket_timeout_s + BLOCK_MS / 1000 + 5.0, **common)
        self._skip_until = 0.0
        self.last_error: str | None = None
        self.up = True
        self._monitor: asyncio.Task | None = None
        metrics.redis_up.set(1)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._skip_until

    async def run(self, op: str, fn: Callable[[Redis], Awaitable[T]], slow: bool = False) -> T:
        """`await fn(client)`; any Redis failure becomes RedisUnavailable (counted under `op`)."""
        if not self.available:
            raise RedisUnavailable(f"redis is unavailable: {self.last_error}", self.cfg.retry_interval_s)
        try:
            return await fn(self.slow if slow else self.client)
        except ResponseError as e:  # Redis answered: a bad command or a lost consumer group, not an outage
            self.metrics.redis_errors.labels(op=op).inc()
            raise RedisUnavailable(f"redis refused {op}: {e}", self.cfg.retry_interval_s) from e
        except (RedisError, OSError, TimeoutError) as e:
            await self._failed(op, e)
            raise RedisUnavailable(f"redis is unavailable: {self.last_error}", self.cfg.retry_interval_s) from e

    async def _failed(self, op: str, e: BaseException) -> None:
        self.metrics.redis_errors.labels(op=op).inc()
        self.last_error = f"{op}: {type(e).__name__}: {e}"[:300]
        self._skip_until = time.monotonic() + self.cfg.retry_interval_s
        # Every pooled connection may be dead (Redis restarted): drop them all, so the first commands after it
        # returns do not fail one stale connection at a time.
        for c in (self.client, self.slow):
            with contextlib.suppress(Exception):
                await c.connection_pool.disconnect()
        if self.up:
            log.warning(
                "redis unavailable; shared cache bypassed, limits %s",
                self.cfg.rate_limit_on_error,
                extra={"error": self.last_error},
            )
        self.up = False
        self.metrics.redis_up.set(0)

    def _ok(self) -> None:
        if not self.up:
            log.info("redis is back")
        self.up = True
        self._skip_until = 0.0
        self.metrics.redis_up.set(1)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok" if self.up and self.available else "degraded"}
        if body["status"] != "ok":
            body["error"] = self.last_error
        return body

    # -- lifetime ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._monitor = asyncio.get_running_loop().create_task(self._ping_loop(), name="xemo-redis-ping")

    async def _ping_loop(self) -> None:
        while True:
            try:
                await self.client.ping()
                self._ok()
            except (RedisError, OSError, TimeoutError) as e:
                await self._failed("ping", e)
            await asyncio.sleep(self.cfg.retry_interval_s)

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(BaseException):
                await self._monitor
        for c in (self.client, self.slow):
            with contextlib.suppress(Exception):
                await c.aclose()


def from_settings(settings: Settings, metrics: Metrics) -> RedisState | None:
    """The shared Redis of this deployment, or None when `redis_url` is not set (everything stays in-process)."""
    return RedisState(settings.redis_url, settings, metrics) if settings.redis_url else None

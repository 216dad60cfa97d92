"""Per-API-key rate limits (`server.rate_limit_per_s`, `server.rate_limit_burst`): 429 + Retry-After past them.

Without Redis each process keeps its own token buckets. With `redis_url` the limit is one GCRA cell per key in
Redis, checked and updated by one Lua script (atomic, on Redis's clock), so N processes together allow a key
exactly its rate, not N times it. When Redis cannot be asked, `redis.rate_limit_on_error` decides: `local` (each
process applies the limit by itself), `open` (no limit) or `closed` (503 + Retry-After).
"""

from __future__ import annotations

import time
from typing import Protocol

from server.errors import RateLimited
from server.redis_state import RedisState, RedisUnavailable
from xemo.settings import Settings


class RateLimiter(Protocol):
    async def check(self, key_id: str) -> None:
        """Return if `key_id` may make one more request now; raise RateLimited (or RedisUnavailable) if not."""


def _limited(rate: float, burst: int, wait_s: float) -> RateLimited:
    return RateLimited(f"rate limit of {rate:g} requests/s (burst {burst}) exceeded for this key", retry_after_s=wait_s)


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


class LocalRateLimiter:
    """One in-memory bucket per API key (bounded: keys come from the settings, never from clients)."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key_id: str) -> None:
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = TokenBucket(self.rate, self.burst)
        wait = bucket.take()
        if wait > 0:
            raise _limited(self.rate, self.burst, wait)

    async def check(self, key_id: str) -> None:
        self.take(key_id)


# GCRA: the cell holds the theoretical arrival time (TAT, microseconds on Redis's clock). A request is allowed
# when TAT - now <= (burst - 1) * interval, and pushes TAT one interval on: `burst` at once, then `rate` per
# second, the same shape as the token bucket. Returns 0 (allowed) or the microseconds until it would be.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then return math.max(1, math.ceil(tat - tolerance - now)) end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return 0
"""


class RedisRateLimiter:
    def __init__(self, redis: RedisState, rate_per_s: float, burst: int, on_error: str) -> None:
        self.redis = redis
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self.on_error = on_error
        self.interval_us = 1e6 / max(rate_per_s, 1e-9)
        self.local = LocalRateLimiter(rate_per_s, burst)
        self._script = redis.client.register_script(_GCRA)

    async def check(self, key_id: str) -> None:
        key = self.redis.key("rl", key_id)
        args = [self.interval_us, (self.burst - 1) * self.interval_us]
        try:
            wait_us = await self.redis.run("rate_limit", lambda c: self._script(keys=[key], args=args, client=c))
        except RedisUnavailable as e:
            if self.on_error == "open":
                return
            if self.on_error == "closed":
                raise RedisUnavailable(
                    "the shared rate limiter is unavailable; retry shortly", e.retry_after_s
                ) from None
            self.local.take(key_id)
            return
        if int(wait_us) > 0:
            raise _limited(self.rate, self.burst, int(wait_us) / 1e6)


def build_rate_limiter(settings: Settings, redis: RedisState | None) -> RateLimiter:
    s = settings.server
    if redis is None:
        return LocalRateLimiter(s.rate_limit_per_s, s.rate_limit_burst)
    return RedisRateLimiter(redis, s.rate_limit_per_s, s.rate_limit_burst, settings.redis.rate_limit_on_error)

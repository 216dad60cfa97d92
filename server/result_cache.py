"""An in-process result cache (serving.md: identical input can be answered from a result cache).

The key is a hash of the uploaded bytes (video and audio, by role) and the request's options. The settings and
the models are fixed for the life of the process, so they are not part of the key; a cache shared between
processes (Redis) must add a hash of them. Only greedy requests (temperature 0) are cached: for those the answer
is a function of the input, so a hit gives what the model would say again. A hit replays the events of the first
answer (label, cues, tokens, done) under the new request's id and timings, and marks the answer `"cached": true`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

Events = list[dict[str, Any]]


def cache_key(video: bytes | None, audio: bytes | None, options: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for role, data in (("video", video), ("audio", audio)):
        h.update(role.encode())
        if data is None:
            h.update(b"\x00none")
        else:
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    h.update(json.dumps(options, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


class ResultCache:
    """LRU with a time to live, bounded by entry count (an entry is one answer's events: a few kB)."""

    def __init__(self, entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.entries = entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, Events]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Events | None:
        item = self._data.get(key)
        if item is None:
            return None
        stored_at, events = item
        if self._clock() - stored_at > self.ttl_s:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return copy.deepcopy(events)  # replay edits the done event; the stored copy stays as it was

    def put(self, key: str, events: Events) -> None:
        self._data[key] = (self._clock(), copy.deepcopy(events))
        self._data.move_to_end(key)
        while len(self._data) > self.entries:
            self._data.popitem(last=False)

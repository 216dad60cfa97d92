"""Automatic prefix caching, the bookkeeping half: which token prefixes have their KV resident in which spare slot.

A backend reserves a few extra sequence slots whose KV cells hold the prompts of earlier requests. A new
sequence whose leading text tokens share at least `min_prefix` tokens with a cached prompt starts from a copy of
that KV and prefills only the rest (vLLM's automatic prefix caching, with whole prompts instead of hashed blocks:
the lite prompts share one long few-shot header and differ only at their end). Entries are evicted LRU. This
module only decides; the backend moves the KV (engines/llm/llama_cpp_backend.py). Engine thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(eq=False)
class Entry:
    slot: int  # the sequence id whose KV cells hold `tokens` at positions 0..len-1
    tokens: list[int]
    last_used: int = 0
    # Where the prompt parts these tokens were prefilled as ended (ascending, the last = len(tokens)): a part
    # boundary is a batch boundary too, so it shapes the KV as much as the tokens do.
    cuts: tuple[int, ...] = ()


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    def __init__(self, slots: Sequence[int], min_prefix: int = 64,
                 aligned: Callable[[int], int] = lambda m: m) -> None:
        """`aligned(m)`: the last position <= m at which every prefill starts a batch, whatever its parts (the
        backend's chunk grid; by default every position)."""
        if min_prefix < 1:
            raise ValueError("min_prefix must be at least 1")
        self.min_prefix = min_prefix
        self.aligned = aligned
        self._free = list(slots)
        self.entries: list[Entry] = []
        self._clock = 0
        self.hits = self.misses = self.tokens_saved = self.inserts = self.evictions = 0

    def _touch(self, e: Entry) -> None:
        self._clock += 1
        e.last_used = self._clock

    def _reusable(self, e: Entry, tokens: Sequence[int], cuts: Sequence[int], limit: int) -> int:
        m = min(common_prefix(e.tokens, tokens), limit)
        mine, theirs = set(cuts), set(e.cuts)
        m = min([m, *(mine ^ theirs)])  # past a cut of only one of them, their batches differ
        return max([self.aligned(m), *(c for c in mine & theirs if c <= m)])

    def reusable(self, tokens: Sequence[int], cuts: Sequence[int], limit: int) -> tuple[Entry | None, int]:
        """The entry, and how many leading tokens of a prompt (`tokens`, prefilled as parts ending at `cuts`)
        may start from its KV such that the KV is what a prefill of that prompt without the cache computes: the
        tokens agree, both were cut into parts at the same places before that point, and the point is a batch
        boundary of both prefills (`aligned`, or a cut of both). At most `limit`."""
        best, n_best = None, 0
        for e in self.entries:
            n = self._reusable(e, tokens, cuts, limit)
            if n > n_best:
                best, n_best = e, n
        return best, n_best

    def use(self, entry: Entry | None, n: int) -> bool:
        """Record the outcome of a lookup whose reusable length the caller settled on: a hit when `n` reaches
        `min_prefix`, else a miss."""
        if entry is None or n < self.min_prefix:
            self.misses += 1
            return False
        self._touch(entry)
        self.hits += 1
        self.tokens_saved += n
        return True

    def place(self, tokens: Sequence[int], cuts: Sequence[int] | None = None) -> int | None:
        """Record `tokens` as resident; returns the slot whose KV the caller must overwrite with them, or None
        when nothing needs copying (too short, or already covered by an entry).

        Slot choice: the entry `tokens` extends (it loses nothing), else a free slot, else the entry sharing the
        longest prefix with `tokens` if that reaches `min_prefix` (a sibling: same few-shot header, other cues;
        the shared part stays resident, so other prompt families keep their slots), else the LRU entry. Ties
        go to the least recently used. `cuts`: where the prompt's parts ended (default: one part)."""
        if len(tokens) < self.min_prefix:
            return None
        cuts = tuple(cuts) if cuts else (len(tokens),)
        shared = []
        for e in self.entries:
            k = common_prefix(e.tokens, tokens)
            if k == len(tokens) and self._reusable(e, tokens, cuts, k) == k:  # an entry already holds these
                self._touch(e)
                return None
            shared.append((k, e))
        target = next((e for k, e in shared if k == len(e.tokens)), None)
        if target is None and self._free:
            target = Entry(self._free.pop(0), [])
            self.entries.append(target)
        elif target is None and shared:
            k_max = max(k for k, _ in shared)
            pool = [e for k, e in shared if k == k_max] if k_max >= self.min_prefix else [e for _, e in shared]
            target = min(pool, key=lambda e: e.last_used)
            self.evictions += 1
        elif target is None:
            return None  # no slots at all
        target.tokens, target.cuts = list(tokens), cuts
        self._touch(target)
        self.inserts += 1
        return target.slot

    def stats(self) -> dict[str, int]:
        return {
            "prefix_cache_hits": self.hits,
            "prefix_cache_misses": self.misses,
            "prefix_cache_tokens_saved": self.tokens_saved,
            "prefix_cache_inserts": self.inserts,
            "prefix_cache_evictions": self.evictions,
            "prefix_cache_entries": len(self.entries),
        }

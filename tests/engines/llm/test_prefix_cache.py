"""Automatic prefix caching in the llama.cpp backend: a prompt that shares its leading text with a recent one
prefills only the rest, and gives exactly the scores and greedy tokens it gives without the cache.

The prompts are the lite profile's real label prompts (engines/lite/prompt.py): one few-shot header shared by
every request with the same modalities, cues that differ at the end. The bookkeeping (LRU, extension, eviction)
is also checked on its own, without a model.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engines.lite import prompt
from engines.llm import LLMBackend, SamplingParams, load_backend, smollm2_gguf_path
from engines.llm.prefix_cache import PrefixCache
from engines.types import Cue

LABELS = ["happy", "sad", "angry", "neutral"]
CHOICES = [" " + lb for lb in LABELS] + [" very surprised indeed"]  # a multi-token choice runs _score's batch


def _label_prompt(face: str, voice: str) -> str:
    cues = [Cue("visual", face, strength=0.9), Cue("auditory", voice, strength=0.8)]
    return prompt.build(cues, LABELS).label_prompt


PROMPTS = [
    _label_prompt("the corners of the mouth turn up", "the pitch is high and varied"),
    _label_prompt("brows drawn together; jaw clenched", "the voice is loud"),
    _label_prompt("looks down; eyes half closed", "the voice is soft and low-pitched"),
]


def _longest(c: PrefixCache, tokens: list[int]) -> tuple:
    """The entry, and how much of a one-part prompt it can give (every position a batch boundary here)."""
    return c.reusable(tokens, [len(tokens)], len(tokens))


# ---- bookkeeping ------------------------------------------------------------------------------------------
def test_a_repeated_prefix_hits_and_a_short_one_does_not() -> None:
    c = PrefixCache([7, 8], min_prefix=4)
    assert c.place([1, 2, 3, 4, 5, 6]) == 7
    e, n = _longest(c, [1, 2, 3, 4, 9])
    assert (e.slot, n) == (7, 4) and c.use(e, n)
    e, n = _longest(c, [1, 2, 3, 9])
    assert n == 3 and not c.use(e, n)  # below min_prefix: a miss
    assert c.place([1, 2]) is None  # too short to be worth a slot
    s = c.stats()
    assert (s["prefix_cache_hits"], s["prefix_cache_misses"], s["prefix_cache_tokens_saved"]) == (1, 1, 4)


def test_an_extension_replaces_its_entry_and_a_covered_prompt_copies_nothing() -> None:
    c = PrefixCache([7, 8], min_prefix=2)
    assert c.place([1, 2, 3]) == 7
    assert c.place([1, 2, 3, 4, 5]) == 7  # extends the entry in slot 7: same slot, nothing lost
    assert c.place([1, 2, 3, 4]) is None  # already covered by slot 7
    assert [e.tokens for e in c.entries] == [[1, 2, 3, 4, 5]]


def test_a_sibling_prompt_replaces_the_entry_it_shares_a_header_with() -> None:
    c = PrefixCache([7, 8], min_prefix=3)
    c.place([1, 2, 3, 4, 5])  # family 1
    c.place([9, 9, 9, 9])  # family 2
    assert c.place([1, 2, 3, 6, 6]) == 7  # same header, other cues: overwrites its sibling, keeps family 2
    assert _longest(c, [9, 9, 9, 9, 1])[1] == 4 and _longest(c, [1, 2, 3, 4])[1] == 3
    assert c.place([1, 2, 7, 7]) == 8  # shares only 2 < min_prefix tokens: a new family, evicts the LRU one
    c = PrefixCache([7, 8], min_prefix=3)
    c.place([1, 2, 3, 4])
    assert c.place([1, 2, 3, 5]) == 8  # a free slot is used before any sibling is overwritten


def test_the_least_recently_used_entry_is_evicted() -> None:
    c = PrefixCache([7, 8], min_prefix=2)
    c.place([1, 1, 1])
    c.place([2, 2, 2])
    c.use(*_longest(c, [1, 1, 1, 5]))  # slot 7 is now the most recently used
    assert c.place([3, 3, 3]) == 8  # evicts [2, 2, 2]
    assert _longest(c, [2, 2, 2])[1] == 0 and _longest(c, [1, 1, 1])[1] == 3
    assert c.stats()["prefix_cache_evictions"] == 1


def test_a_prompt_cut_into_parts_reuses_only_where_both_prefills_started_a_batch() -> None:
    grid = 4  # every prefill starts a batch at multiples of 4, and at each of its own part boundaries
    c = PrefixCache([7, 8], min_prefix=2, aligned=lambda m: m // grid * grid)
    tokens = list(range(1, 12))
    c.place(tokens[:6], [6])  # a 6-token prompt start, prefilled on its own
    e, n = c.reusable(tokens, [6, 11], limit=10)
    assert (e.slot, n) == (7, 6)  # the whole lead: both prefills ended a batch at 6
    assert c.reusable(tokens, [11], limit=10)[1] == 4  # one part: its batch runs past 6, so only up to the grid
    assert c.reusable(tokens, [5, 11], limit=10)[1] == 4  # cut elsewhere before 6: the batches differ from 5 on
    assert c.reusable(tokens, [6, 11], limit=5)[1] == 4  # the last prompt token is always prefilled
    assert c.place(tokens, [6, 11]) == 7  # extends the lead in its slot
    e, n = c.reusable([*tokens, 50, 51], [6, 11, 13], limit=12)
    assert n == 11  # the explanation prompt reuses the whole label prompt
    assert c.place(tokens[:6], [6]) is None  # covered: the entry holds the lead, cut at 6
    assert c.place(tokens[:5], [5]) == 8  # not covered: 5 is a batch boundary of neither


# ---- the llama.cpp backend ---------------------------------------------------------------------------------
def _load(slots: int) -> LLMBackend:
    pytest.importorskip("llama_cpp")
    try:
        path = smollm2_gguf_path()
    except Exception as e:
        pytest.skip(str(e))
    return load_backend(path, "llama_cpp", n_ctx=1024, n_threads=1, max_num_seqs=3, prefix_cache_slots=slots)


@pytest.fixture(scope="module")
def cold() -> LLMBackend:
    b = _load(0)
    yield b
    b.close()


@pytest.fixture(scope="module")
def cached() -> LLMBackend:
    b = _load(2)
    yield b
    b.close()


def _score(b: LLMBackend, segments: list) -> dict[str, float]:
    return asyncio.run(b.score_choices(segments, CHOICES))


def _greedy(b: LLMBackend, segments: list, n: int = 8) -> list[int]:
    async def go() -> list[int]:
        return [t.token_id async for t in b.generate(segments, SamplingParams(max_tokens=n))]

    return asyncio.run(go())


@pytest.fixture(scope="module")
def reference(cold: LLMBackend) -> dict[str, tuple[dict[str, float], list[int]]]:
    """Scores of each label prompt and greedy tokens of its explanation prompt, without any cache."""
    return {p: (_score(cold, [p]), _greedy(cold, [p + " happy\nExplanation: In the video,"])) for p in PROMPTS}


def _hits(b: LLMBackend) -> tuple[int, int]:
    s = b.stats()
    return s["prefix_cache_hits"], s["prefix_cache_tokens_saved"]


def test_the_lite_pattern_hits_and_gives_exactly_the_uncached_scores_and_tokens(cached, reference) -> None:
    n_header = len(cached.tokenize(PROMPTS[0].rsplit("\nCues:", 1)[0]))
    grid = cached.prefill_chunk  # prefixes are reused up to a prefill-batch boundary
    assert n_header >= grid  # the point of the exercise: most of the prompt is shared
    for rnd in range(2):  # the second round repeats whole prompts
        for p in PROMPTS:
            hits, saved = _hits(cached)
            assert _score(cached, [p]) == pytest.approx(reference[p][0], abs=1e-4)
            if rnd or p != PROMPTS[0]:
                # a hit reuses at least the shared header (more where the prompts agree past it), on the grid
                now_hits, now_saved = _hits(cached)
                assert now_hits == hits + 1 and now_saved - saved >= n_header // grid * grid
                assert (now_saved - saved) % grid == 0
            hits, saved = _hits(cached)
            assert _greedy(cached, [p + " happy\nExplanation: In the video,"]) == reference[p][1]
            assert _hits(cached)[0] == hits + 1  # the explanation prompt extends the label prompt just scored
    assert cached.stats()["prefix_cache_entries"] == 2


def test_cached_kv_lives_only_in_the_spare_slots(cached) -> None:
    _score(cached, [PROMPTS[0]])
    lib, mem, m = cached.lib, cached.mem, cached.max_num_seqs
    assert all(lib.llama_memory_seq_pos_max(mem, s) == -1 for s in range(m))  # request slots all freed
    held = {s: lib.llama_memory_seq_pos_max(mem, s) + 1 for s in range(m, m + 2)}
    entries = {e.slot: len(e.tokens) for e in cached._prefix.entries}
    assert entries and held == {s: entries.get(s, 0) for s in held}
    assert sorted(cached._free_slots) == list(range(m))


def test_more_distinct_prefixes_than_slots_evict_and_stay_correct(cached, cold) -> None:
    before = cached.stats()["prefix_cache_evictions"]
    others = ["Once upon a time, " * 60 + "the end.", "1, 2, 3, 4, 5, " * 20 + "6,", "Dear Sir, " * 100 + "yours"]
    assert all(300 <= len(cold.tokenize(p)) < 400 for p in others)
    for p in others:  # three unrelated long prompts through two slots
        assert _score(cached, [p]) == pytest.approx(_score(cold, [p]), abs=1e-4)
    assert cached.stats()["prefix_cache_evictions"] >= before + 1
    hits = _hits(cached)[0]
    assert _score(cached, [others[-1]]) == pytest.approx(_score(cold, [others[-1]]), abs=1e-4)
    assert _hits(cached)[0] == hits + 1  # the most recent one survived


def test_soft_tokens_after_a_cached_text_prefix(cached, cold) -> None:
    soft = cold.embed_tokens(cold.tokenize(" The person smiles widely."))
    segs = [PROMPTS[1].rsplit("\nCues:", 1)[0], soft, "\nCues:\n- face: a smile\nEmotion:"]
    _score(cached, [PROMPTS[1]])  # the header is now resident
    hits = _hits(cached)[0]
    assert _score(cached, segs) == pytest.approx(_score(cold, segs), abs=1e-4)
    assert _greedy(cached, segs) == _greedy(cold, segs)
    assert _hits(cached)[0] == hits + 2


def test_concurrent_sequences_sharing_a_prefix(cached, reference) -> None:
    _score(cached, [PROMPTS[2]])  # warm: the header is resident

    async def main() -> list[list[int]]:
        async def one(p: str) -> list[int]:
            gen = cached.generate([p + " happy\nExplanation: In the video,"], SamplingParams(max_tokens=8))
            return [t.token_id async for t in gen]

        return list(await asyncio.gather(*(one(p) for p in PROMPTS)))

    hits = _hits(cached)[0]
    assert asyncio.run(main()) == [reference[p][1] for p in PROMPTS]
    assert _hits(cached)[0] >= hits + 3
    assert cached.stats()["running"] == 0 and sorted(cached._free_slots) == [0, 1, 2]


def test_cancelling_a_sequence_that_started_from_the_cache_frees_its_slot(cached) -> None:
    async def main() -> None:
        stream = cached.generate([PROMPTS[0] + " happy\nExplanation:"], SamplingParams(max_tokens=50))
        await stream.__anext__()
        await stream.aclose()
        for _ in range(200):
            if cached.stats()["running"] == 0:
                return
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert cached.stats()["running"] == 0 and sorted(cached._free_slots) == [0, 1, 2]
    lib = cached.lib
    assert all(lib.llama_memory_seq_pos_max(cached.mem, s) == -1 for s in range(cached.max_num_seqs))


def test_zero_slots_disable_the_cache(cold) -> None:
    assert cold.stats() == {"running": 0, "waiting": 0}
    assert np.isfinite(list(_score(cold, [PROMPTS[0]]).values())).all()


def test_the_head_and_then_the_whole_label_prompt_are_reused_and_change_no_score_or_token(cached, cold) -> None:
    """The lite pattern: label prompts as [shared head, cue lines], the explanation as [head, cue lines, label].
    The head is reused whole (a part boundary is a batch boundary of both prefills), and the explanation reuses
    the label prompt just scored whole, wherever the chunk grid falls."""
    words = Cue("verbal", 'says: "I can not believe it"', strength=1.0)
    first = prompt.build([words, Cue("visual", "smiles", strength=0.9)], LABELS)
    parts = prompt.build([words, Cue("visual", "frowns", strength=0.9)], LABELS)
    n_head, n_label = len(cached.tokenize(parts.head)), cached.prompt_tokens(parts.segments)
    assert n_head % cached.prefill_chunk and n_label % cached.prefill_chunk  # off the grid: only cuts reuse all
    _score(cached, first.segments)
    hits, saved = _hits(cached)
    assert _score(cached, parts.segments) == _score(cold, parts.segments)
    now_hits, now_saved = _hits(cached)
    assert now_hits == hits + 1 and n_head <= now_saved - saved < n_head + cached.prefill_chunk
    explanation = [*parts.explanation_segments("happy"), " In the video,"]
    assert _greedy(cached, explanation) == _greedy(cold, explanation)
    assert _hits(cached) == (now_hits + 1, now_saved + n_label)

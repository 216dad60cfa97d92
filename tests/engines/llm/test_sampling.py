"""Per-sequence sampling: greedy/top-p, stop strings held back until decided, the choice trie."""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import BadRequest
from engines.llm.base import SamplingParams
from engines.llm.sampling import (
    ChoiceTrie,
    Detokenizer,
    SequenceSampler,
    StopMatcher,
    sample_token,
    validate_params,
)


def test_greedy_takes_argmax_and_top_p_keeps_the_nucleus() -> None:
    logits = np.array([0.0, 5.0, 4.9, -3.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    assert sample_token(logits, 0.0, 1.0, rng) == 1
    # p ≈ [.004, .52, .47, .0002]: top_p 0.5 keeps only token 1; top_p 0.9 keeps 1 and 2, never 0 or 3
    assert {sample_token(logits, 1.0, 0.5, rng) for _ in range(50)} == {1}
    assert {sample_token(logits, 1.0, 0.9, rng) for _ in range(200)} == {1, 2}


def test_sampling_is_reproducible_per_seed() -> None:
    logits = np.random.default_rng(1).normal(size=100).astype(np.float32)

    def draw(seed: int) -> list[int]:
        rng = np.random.default_rng(seed)
        return [sample_token(logits, 1.0, 0.95, rng) for _ in range(20)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_stop_matcher_holds_back_possible_stop_prefixes() -> None:
    m = StopMatcher(["###", "\nUser:"])
    assert m.feed("Hello #") == ("Hello ", False)  # "#" may start "###"
    assert m.feed("# there") == ("## there", False)  # "## " cannot be a stop any more
    assert m.feed(" ok\nUs") == (" ok", False)
    assert m.feed("er: next") == ("", True)  # cut at the stop; the stop itself is never emitted
    m2 = StopMatcher(["END"])
    assert m2.feed("abcEN") == ("abc", False)
    assert m2.flush() == "EN"


def test_choice_trie_allows_only_choice_prefixes_and_eos_where_a_choice_ends() -> None:
    eos = 0
    trie = ChoiceTrie([[5, 6], [5, 6, 7], [8]], eos)
    logits = np.zeros(10, dtype=np.float32)
    assert set(np.flatnonzero(np.isfinite(trie.mask_logits(logits)))) == {5, 8}
    trie.accept(5)
    assert set(np.flatnonzero(np.isfinite(trie.mask_logits(logits)))) == {6}
    trie.accept(6)
    assert set(np.flatnonzero(np.isfinite(trie.mask_logits(logits)))) == {7, eos}
    assert not trie.complete
    trie.accept(7)
    assert trie.complete


class _Chars(Detokenizer):
    def add(self, token: int) -> str:
        return chr(ord("a") + token - 1)


def test_sequence_sampler_finishes_on_length_stop_and_eos() -> None:
    def run(params: SamplingParams, seq: list[int]) -> list[tuple[str, str | None]]:
        s = SequenceSampler(params, _Chars(), lambda t: t == 0, None, max_new_tokens=100)
        out = []
        for t in seq:
            logits = np.full(30, -5.0, dtype=np.float32)
            logits[t] = 5.0
            st = s.step(logits)
            out.append((st.text, st.finish_reason))
            if st.finish_reason:
                break
        return out

    assert run(SamplingParams(max_tokens=2), [1, 2, 3]) == [("a", None), ("b", "length")]
    assert run(SamplingParams(stop=["bc"]), [1, 2, 3, 4]) == [("a", None), ("", None), ("", "stop")]
    assert run(SamplingParams(), [1, 0, 2]) == [("a", None), ("", "stop")]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_tokens=0),
        SamplingParams(temperature=-1),
        SamplingParams(top_p=0),
        SamplingParams(stop=[""]),
        SamplingParams(choices=[]),
        SamplingParams(choices=["a"], grammar='root ::= "a"'),
    ],
)
def test_bad_sampling_params_are_rejected(params: SamplingParams) -> None:
    with pytest.raises(BadRequest):
        validate_params(params)


def test_forced_tokens_follow_the_trie_and_stop_at_the_length_limit() -> None:
    trie = ChoiceTrie([[5, 6, 7, 8], [5, 6, 9]], 0)
    assert trie.forced() == [5, 6]  # both choices start so; after 6 the model must choose
    s = SequenceSampler(SamplingParams(max_tokens=3), _Chars(), lambda t: t == 0, trie, max_new_tokens=100)
    forced = s.fast_forward()
    assert [f.token for f in forced] == [5, 6] and all(f.logprob is None for f in forced)
    logits = np.zeros(10, dtype=np.float32)
    logits[7] = 1.0
    last = s.step(logits)  # the third token reaches max_tokens
    assert last.token == 7 and last.finish_reason == "length"
    s2 = SequenceSampler(SamplingParams(max_tokens=1), _Chars(), lambda t: t == 0,
                         ChoiceTrie([[5, 6, 7]], 0), max_new_tokens=100)
    assert [(f.token, f.finish_reason) for f in s2.fast_forward()] == [(5, "length")]

"""Verbal cues from the transcript: VADER sentiment (lexicon inside the wheel), emotion words, the quote."""

from __future__ import annotations

import json

import media
import pytest

from engines.errors import BadRequest
from engines.perception.verbal import verbal_cues


def texts(res) -> list[str]:
    return [c.text for c in res.cues]


def test_negative_sentence_gives_negative_cue_frustration_and_quote():
    res = verbal_cues(media.SENTENCE)
    assert "negative wording" in texts(res)
    assert "the words express frustration" in texts(res)
    assert res.quote == media.SENTENCE
    assert f'says: "{media.SENTENCE}"' in texts(res)
    assert res.sentiment["compound"] <= -0.5 and set(res.sentiment) == {"neg", "neu", "pos", "compound"}
    neg = next(c for c in res.cues if c.text == "negative wording")
    assert "unacceptable" in neg.evidence["negative_words"]
    assert all(c.modality == "verbal" and 0 < c.strength <= 1 for c in res.cues)


def test_positive_sentence_gives_positive_cue():
    res = verbal_cues("I am so happy to see you, this is wonderful!")
    assert "positive wording" in texts(res)
    assert "the words express joy" in texts(res)
    assert "exclaims" in texts(res)
    assert not any("negative" in t or "frustration" in t for t in texts(res))


def test_negation_is_not_read_as_joy():
    res = verbal_cues("I am not happy at all.")
    assert any("negative" in t for t in texts(res))
    assert "the words express joy" not in texts(res)


@pytest.mark.parametrize("empty", [None, "", "   \n\t", "..."])
def test_no_transcript_gives_no_verbal_cues(empty):
    res = verbal_cues(empty)
    assert res.cues == [] and res.quote is None


def test_long_transcript_is_quoted_shortly_and_non_text_is_rejected():
    res = verbal_cues("okay " * 2000)
    assert res.quote is not None and len(res.quote) <= 160 and res.quote.endswith("…")
    with pytest.raises(BadRequest):
        verbal_cues(42)  # type: ignore[arg-type]


@pytest.mark.skipif(not (media.SAMPLES / "sample_00000007.json").is_file(), reason="shared sample not present")
def test_shared_sample_subtitle():
    subtitle = json.loads((media.SAMPLES / "sample_00000007.json").read_text())["subtitle"]
    res = verbal_cues(subtitle)
    print("\nsample_00000007 subtitle:", [(c.text, c.strength) for c in res.cues], res.sentiment)
    assert res.quote == subtitle
    assert not any("negative" in t for t in texts(res))

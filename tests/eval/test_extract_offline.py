"""The offline cue extractor on EMER-style paragraphs written for these tests (real MiniLM prototypes)."""

from __future__ import annotations

import pytest

from eval.embed import CachedEmbedder
from eval.emocue360 import score
from eval.extract_offline import OfflineExtractor

ANGRY = (
    "In the video, a middle-aged man stands in a kitchen. His brows are furrowed and his eyes are narrowed, and he "
    "points his finger at the person in front of him. In the audio, his voice is loud and sharp, with a fast pace. "
    'The subtitle says, "I told you a hundred times!" Based on his frowning face and raised voice, we can infer that '
    "he is angry and frustrated with the other person."
)
SAD = (
    "In the video, a young woman sits alone on a bench at night. Her head is lowered and tears roll down her "
    "cheeks, while her shoulders tremble slightly. In the audio, she speaks softly in a low, shaky voice, pausing "
    "between words. In the text, the subtitle says, \u201cI just wanted him to stay.\u201d This sentence suggests "
    "she has lost someone important to her. Therefore, her emotional state is sadness."
)
SURPRISE = "The boy's eyes widen and his mouth falls open. He gasps loudly. He seems genuinely surprised by the gift."


def where(cues: dict[str, list[str]], fragment: str) -> list[str]:
    """The categories holding a cue that contains `fragment` (case-insensitive)."""
    return [c for c, xs in cues.items() if any(fragment.lower() in x.lower() for x in xs)]


@pytest.fixture(scope="module")
def extractor(minilm: CachedEmbedder) -> OfflineExtractor:
    return OfflineExtractor(minilm)


def test_angry_paragraph(extractor: OfflineExtractor) -> None:
    cues = extractor.extract(ANGRY)
    assert set(cues) == {"visual", "auditory", "emotional"}
    assert where(cues, "brows are furrowed") == ["visual"]
    assert where(cues, "points his finger") == ["visual"]
    assert where(cues, "voice is loud") == ["auditory"]
    assert where(cues, "angry and frustrated") == ["emotional"]
    assert "Subtitle text: 'I told you a hundred times!'" in cues["auditory"]
    assert not where(cues, "hundred times") or where(cues, "hundred times") == ["auditory"]
    assert all(c.endswith((".", "!", "?", "'")) and c[0].isupper() for xs in cues.values() for c in xs)


def test_sad_paragraph_with_curly_quotes(extractor: OfflineExtractor) -> None:
    cues = extractor.extract(SAD)
    assert where(cues, "tears roll down") == ["visual"]
    assert where(cues, "bench at night") == ["visual"]
    assert where(cues, "shaky voice") == ["auditory"]
    assert where(cues, "lost someone important") == ["emotional"]
    assert where(cues, "sadness") == ["emotional"]
    assert "Subtitle text: 'I just wanted him to stay.'" in cues["auditory"]
    # "the subtitle says," is scaffolding, not a cue
    assert not where(cues, "subtitle says")


def test_paragraph_without_section_markers(extractor: OfflineExtractor) -> None:
    cues = extractor.extract(SURPRISE)
    assert where(cues, "eyes widen") == ["visual"]
    assert where(cues, "gasps loudly") == ["auditory"]
    assert where(cues, "surprised") == ["emotional"]
    assert cues["auditory"] and not any(c.startswith("Subtitle") for c in cues["auditory"])


def test_empty_and_junk_input(extractor: OfflineExtractor) -> None:
    assert extractor.extract("") == {"visual": [], "auditory": [], "emotional": []}
    assert extractor.extract("   ok.  ") == {"visual": [], "auditory": [], "emotional": []}


def test_a_quote_introduced_by_the_person_is_only_the_subtitle(extractor: OfflineExtractor) -> None:
    """'the person says "..."' is the subtitle, like 'the man says': no auditory cue besides the quote itself."""
    cues = extractor.extract('In the text, the person says "see you soon", and the text has positive wording.')
    assert cues["auditory"] == ["Subtitle text: 'see you soon'"]
    assert where(cues, "positive wording") == ["emotional"]


def test_subtitle_cues_are_dropped_by_the_metric(extractor: OfflineExtractor, minilm: CachedEmbedder) -> None:
    """A subtitle-only auditory difference must not change the score (the release's "text" filter)."""
    ref = extractor.extract(ANGRY)
    pred = {k: list(v) for k, v in ref.items()}
    pred["auditory"] = [c for c in pred["auditory"] if not c.startswith("Subtitle")]
    rep = score({"x": pred}, {"x": ref}, minilm)
    assert rep.categories["auditory"].f1 == pytest.approx(1.0, abs=1e-4)


def test_extraction_of_a_paraphrase_scores_well(extractor: OfflineExtractor, minilm: CachedEmbedder) -> None:
    """Extract-then-score is what the runner does: a close paraphrase must beat a description of another clip."""
    para = (
        "In the video, a man in a kitchen frowns deeply with narrowed eyes and jabs his finger at someone. In the "
        "audio, he shouts loudly and quickly. He is clearly furious and fed up."
    )
    ref = {"x": extractor.extract(ANGRY)}
    close = score({"x": extractor.extract(para)}, ref, minilm).categories
    far = score({"x": extractor.extract(SAD)}, ref, minilm).categories
    for c in ("visual", "emotional"):
        assert close[c].f1 > far[c].f1

"""Verbal cues from the (optional) transcript: VADER sentiment, emotion words, and the quoted words themselves.

VADER's lexicon ships inside the vaderSentiment wheel (MIT), so this works offline. VADER only scores valence;
the small emotion-word table below names *which* feeling the words express, and every match is listed as
evidence so a reader can see why a cue was given.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from engines.errors import BadRequest
from engines.perception.resolve import resolve_opposites
from engines.types import Cue

MAX_CHARS = 5000  # a transcript for a short clip; longer text is cut before scoring
QUOTE_CHARS = 160

# feeling -> word stems (matched at word starts, case-insensitive) and phrases.
EMOTION_WORDS: dict[str, tuple[str, ...]] = {
    "frustration": (
        "unacceptable",
        "ridiculous",
        "annoy",
        "frustrat",
        "fed up",
        "sick of",
        "enough",
        "again",
        "cannot believe",
        "can't believe",
        "unbelievable",
        "seriously",
        "useless",
    ),
    "anger": ("angry", "furious", "hate", "mad at", "damn", "stupid", "idiot", "shut up", "how dare", "outrage"),
    "sadness": (
        "sad",
        "cry",
        "crying",
        "miss you",
        "lonely",
        "alone",
        "lost",
        "hurt",
        "sorry",
        "depress",
        "unhappy",
        "heartbroken",
        "grief",
    ),
    "worry": ("worried", "worry", "afraid", "scared", "nervous", "anxious", "fear", "panic", "what if", "terrified"),
    "joy": (
        "happy",
        "glad",
        "great",
        "wonderful",
        "love",
        "excited",
        "awesome",
        "fantastic",
        "yay",
        "delight",
        "amazing",
        "thank",
    ),
    "surprise": ("wow", "really?", "no way", "surprised", "surprise", "oh my", "what?"),
}
PHRASES = {
    "frustration": "the words express frustration",
    "anger": "the words express anger",
    "sadness": "the words express sadness",
    "worry": "the words express worry",
    "joy": "the words express joy",
    "surprise": "the words express surprise",
}
NEGATIVE_FEELINGS = {"frustration", "anger", "sadness", "worry"}

_analyzer: Any = None
_lock = threading.Lock()


@dataclass
class VerbalResult:
    cues: list[Cue] = field(default_factory=list)
    sentiment: dict[str, float] = field(default_factory=dict)  # VADER neg/neu/pos/compound
    quote: str | None = None


def _vader() -> Any:
    global _analyzer
    with _lock:
        if _analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            _analyzer = SentimentIntensityAnalyzer()
    return _analyzer


def warm_up() -> None:
    """Load the lexicon now (about 0.1 s) instead of on the first request."""
    _vader()


def verbal_cues(transcript: str | None) -> VerbalResult:
    if transcript is None:
        return VerbalResult()
    if not isinstance(transcript, str):
        raise BadRequest("the transcript must be text")
    text = " ".join(transcript.split())[:MAX_CHARS]
    if not text or not re.search(r"\w", text):
        return VerbalResult()
    scores = {k: round(float(v), 4) for k, v in _vader().polarity_scores(text).items()}
    quote = text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1].rstrip() + "…"
    cues = [Cue("verbal", f'says: "{quote}"', strength=1.0, evidence={"transcript_chars": len(text)})]

    compound = scores["compound"]
    words = _valenced_words(text)
    ev = {"vader": scores, "negative_words": words["neg"], "positive_words": words["pos"]}
    if compound <= -0.05:
        label = "negative wording" if compound <= -0.5 else "mildly negative wording"
        cues.append(Cue("verbal", label, strength=round(min(1.0, abs(compound)), 3), evidence=ev))
    elif compound >= 0.05:
        label = "positive wording" if compound >= 0.5 else "mildly positive wording"
        cues.append(Cue("verbal", label, strength=round(min(1.0, compound), 3), evidence=ev))
    else:
        cues.append(Cue("verbal", "neutral wording", strength=round(scores.get("neu", 0.0), 3), evidence=ev))

    for feeling, hits in _feelings(text).items():
        # A feeling word against the overall sentiment ("not happy") is not evidence for that feeling.
        if (feeling in NEGATIVE_FEELINGS and compound > 0.3) or (feeling == "joy" and compound < -0.3):
            continue
        strength = round(min(1.0, 0.4 + 0.2 * len(hits) + 0.3 * abs(compound)), 3)
        cues.append(Cue("verbal", PHRASES[feeling], strength=strength, evidence={"words": hits}))
    if "!" in text:
        cues.append(
            Cue(
                "verbal",
                "exclaims",
                strength=round(min(1.0, 0.4 + 0.2 * text.count("!")), 3),
                evidence={"exclamation_marks": text.count("!")},
            )
        )
    if "?" in text:
        cues.append(Cue("verbal", "asks a question", strength=0.5, evidence={"question_marks": text.count("?")}))
    # "mildly positive wording" beside "the words express sadness": the stronger reading is stated, not both
    return VerbalResult(resolve_opposites(cues), scores, quote)


def _valenced_words(text: str) -> dict[str, list[str]]:
    """Words of the transcript that VADER's lexicon scores clearly (|valence| >= 1), strongest first."""
    lex = _vader().lexicon
    scored = {w: lex[w] for w in re.findall(r"[a-z']+", text.lower()) if abs(lex.get(w, 0.0)) >= 1.0}
    ranked = sorted(scored, key=lambda w: -abs(scored[w]))
    return {"neg": [w for w in ranked if scored[w] < 0][:5], "pos": [w for w in ranked if scored[w] > 0][:5]}


def _feelings(text: str) -> dict[str, list[str]]:
    low = text.lower().replace("’", "'")
    out: dict[str, list[str]] = {}
    for feeling, stems in EMOTION_WORDS.items():
        hits = [s for s in stems if re.search(r"(?<![a-z'])" + re.escape(s), low)]
        if hits:
            out[feeling] = hits
    return out

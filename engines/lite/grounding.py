"""Grounding check: no explanation sentence may talk about a modality for which nothing was perceived.

The lexicons name words that only make sense if that modality was observed ("smile" needs a face, "pitch" needs a
voice, "says" needs a transcript), and quoted words must come from the transcript. `ungrounded()` flags each sentence
that breaks either rule; `SentenceGate` applies the check while an explanation streams, releasing text one checked
sentence at a time so an ungrounded sentence never reaches a client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from engines.types import Modality

LEXICON: dict[Modality, tuple[str, ...]] = {
    "visual": (
        "face", "facial", "smile", "smiling", "smiles", "grin", "frown", "brow", "eyebrow", "eye", "eyes", "gaze",
        "mouth", "lips", "lip", "jaw", "nod", "nods", "nodding", "head", "looks", "looking", "glance", "expression",
        "squint", "blink", "cheek", "chin", "video", "visual", "visually", "seen", "visible",
    ),
    "auditory": (
        "voice", "vocal", "tone", "pitch", "loud", "loudly", "soft", "softly", "quiet", "quietly", "shout", "shouts",
        "shouting", "yell", "sigh", "laugh", "laughs", "laughter", "audio", "heard", "hear",
        "speech", "speaks", "speaking", "spoken", "pause", "pauses", "tremble", "trembles", "trembling", "breathy",
        "intonation", "volume", "pace", "rate",
    ),
    "verbal": (
        "says", "said", "saying", "words", "word", "wording", "subtitle", "transcript", "utterance", "phrase",
        "sentence", "text", "statement", "mentions", "quote",
    ),
}

# What the pipeline itself states when a modality gave nothing: facts about absence, not claims to check.
ABSENCE: dict[Modality, str] = {
    "visual": "No face was seen in the video.",
    "auditory": "No speech was heard in the audio.",
    "verbal": "No transcript was given.",
}

NO_CUES = "No cues were perceived, so the label is only the model's prior guess."

_WORD = re.compile(r"[a-z]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Flag:
    sentence: str
    modality: Modality
    words: list[str]


def modality_words(sentence: str) -> dict[Modality, list[str]]:
    words = set(_WORD.findall(sentence.lower()))
    return {m: sorted(words.intersection(lex)) for m, lex in LEXICON.items() if words.intersection(lex)}


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


_QUOTE = re.compile(r'"([^"]+)"')


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def ungrounded(explanation: str, perceived: Iterable[Modality], transcript: str | None = None) -> list[Flag]:
    """Sentences that mention a modality not in `perceived` (the modalities that produced cues), or quote words
    that are not in the transcript."""
    have = set(perceived)
    said = _norm(transcript or "")
    flags = []
    for s in split_sentences(explanation):
        if s in ABSENCE.values() or s == NO_CUES:
            continue
        for m, words in modality_words(s).items():
            if m not in have:
                flags.append(Flag(s, m, words))
        for q in _QUOTE.findall(s):
            if _norm(q) and _norm(q) not in said:
                flags.append(Flag(s, "verbal", [q]))
    return flags


@dataclass
class SentenceGate:
    """Buffers streamed text; `feed` returns the sentences that completed and passed the check.

    The first ungrounded sentence closes the gate: it and everything after it are dropped (generation should
    stop then), and `dropped` records it so the answer can say so.
    """

    perceived: set[Modality]
    transcript: str | None = None
    buffer: str = ""
    closed: bool = False
    dropped: list[Flag] = field(default_factory=list)

    def feed(self, text: str) -> str:
        if self.closed:
            return ""
        self.buffer += text
        parts = _SENTENCE_END.split(self.buffer)
        if len(parts) == 1:
            return ""
        self.buffer = parts[-1]
        return self._release(parts[:-1], trailing=" ")

    def flush(self) -> str:
        """The rest once generation ends; an unfinished last sentence is checked like any other."""
        if self.closed or not self.buffer.strip():
            return ""
        rest, self.buffer = self.buffer, ""
        return self._release([rest], trailing="")

    def _release(self, sentences: list[str], trailing: str) -> str:
        out = []
        for s in sentences:
            flags = ungrounded(s, self.perceived, self.transcript)
            if flags:
                self.dropped.extend(flags)
                self.closed = True
                break
            out.append(s.strip())
        return (" ".join(out) + trailing) if out else ""

"""Offline cue extractor: free-text emotion descriptions -> visual / auditory / emotional cue lists.

No network and no LLM: the description is cut into sentences and clauses, each clause is assigned to a category
by its embedding similarity to labelled prototype cues plus lexical evidence (body/face words, voice words,
inference words) and the section it sits in ("In the video, …", "In the audio, …", "Based on …"). Quoted speech
becomes an auditory "Subtitle text: '…'" entry, so EmoCue-360's subtitle filter drops it exactly as it drops the
LLM-extracted ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from eval.embed import Embedder
from eval.emocue360 import CATEGORIES, Cues

# Labelled prototypes in the EMER style (written for this project; atomic cues of each kind).
PROTOTYPES: dict[str, list[str]] = {
    "visual": [
        "The corners of her mouth are turned up.",
        "He frowns and his brows are knitted together.",
        "Her eyes are wide open and staring.",
        "He is smiling broadly.",
        "She nods her head slightly.",
        "The man looks down and avoids eye contact.",
        "Her facial expression is tense.",
        "He is sitting in an office wearing a suit.",
        "She covers her face with her hands.",
        "Tears are in his eyes.",
        "Her lips are pressed tightly together.",
        "The scene takes place in a dimly lit room.",
    ],
    "auditory": [
        "The voice is loud and sharp.",
        "He speaks quickly with a raised pitch.",
        "Her tone is calm and gentle.",
        "There is a hint of laughter in the voice.",
        "The speech is slow and hesitant.",
        "She sighs heavily.",
        "His voice trembles slightly.",
        "The intonation rises at the end of the sentence.",
        "The volume is low, almost a whisper.",
        "The speaker sounds impatient.",
    ],
    "emotional": [
        "She is likely feeling happy.",
        "This suggests he is angry.",
        "The character appears to be in a pleasant mood.",
        "He may be worried about the outcome.",
        "Her reaction implies surprise.",
        "The overall emotional state is sadness.",
        "This indicates dissatisfaction and frustration.",
        "She expresses anticipation and willingness to meet.",
        "He is probably receiving bad news.",
        "The words convey a positive attitude.",
    ],
}

_VISUAL = re.compile(
    r"\b(face|facial|eyes?|eyebrows?|brows?|mouth|lips?|smil\w*|frown\w*|grin\w*|gaz\w*|stare\w*|star(?:ing|es)|"
    r"glanc\w*|look(?:s|ing|ed)? (?:at|down|up|away|around)|nod\w*|shak\w* (?:his|her|their) head|head|hands?|"
    r"arms?|gestur\w*|posture|body|shoulders?|tears?|cry\w*|squint\w*|blink\w*|wearing|cloth\w*|dressed|"
    r"sitting|standing|walk\w*|scene|setting|indoors?|outdoors?|room|background|light\w*|appearance|"
    r"expression|wrinkl\w*|cheeks?|forehead|jaw|chin|teeth|phone|camera)\b",
    re.I,
)
_AUDITORY = re.compile(
    r"\b(voice|vocal|tone|pitch|loud\w*|quiet\w*|soft(?:ly)?|whisper\w*|shout\w*|yell\w*|scream\w*|speech|"
    r"speak\w*|spoke|said|says|talk\w*|intonation|volume|laugh\w*|sigh\w*|sob\w*|breath\w*|pause\w*|"
    r"stammer\w*|stutter\w*|rhythm|pace|fast|slow(?:ly)?|tremb\w*|audio|sound\w*|heard|hearing|accent)\b",
    re.I,
)
_INFER = re.compile(
    r"\b(indicat\w*|suggest\w*|infer\w*|impl(?:y|ies|ied)|reflect\w*|reveal\w*|show(?:s|ing)? (?:that|her|his)|"
    r"likely|probably|possibly|perhaps|may|might|seems?|feel\w*|felt|mood|emotion\w*|state|attitude|"
    r"express(?:es|ing)?|conve\w*|therefore|overall|conclude|willing\w*|response|reaction|"
    r"news|anticipat\w*|satisf\w*|dissatisf\w*|frustrat\w*|disappoint\w*|happiness|anger|sadness|fear|"
    r"worr\w*|anxi\w*|surpris\w*|disgust\w*|excite\w*|content\w*|pleas\w*|upset|helpless\w*|confus\w*|"
    r"happy|sad|angry|joy\w*|glad|cheerful|nervous|afraid|scared|annoyed|irritat\w*|furious|relaxed|"
    r"calm(?:ness)?|tense|tension|distress\w*|hopeful|lonely|bored)\b",
    re.I,
)
_QUOTE = re.compile(r"\"\"?([^\"]+?)\"\"?|“([^”]+)”|‘([^’]+)’")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“‘\[(])")
_CLAUSE = re.compile(
    r";\s+|,\s+(?=(?:and|but|while|whereas|with|which|indicating|suggesting|showing|revealing|implying|"
    r"accompanied|as well as|possibly|perhaps|probably|as if|so|yet|although|though)\b)|"
    r",\s+(?=we (?:can )?(?:infer|conclude|see|tell)\b)|"
    r"\s+and\s+(?=(?:his|her|their|its|the|he|she|they)\s+\w+\s+(?:is|are|was|were|\w+s)\b)|"
    r"\s+(?=(?:indicating|suggesting|implying|revealing)\b)|\s+as well as\s+",
    re.I,
)
_LEAD = re.compile(
    r"^(?:(?:in the (?:video|audio|text|clip|image|footage|scene)|overall|in summary|in conclusion|therefore|"
    r"thus|however|meanwhile|additionally|moreover|furthermore|also|then|finally|as time goes on|"
    r"at the beginning|at the end|at first|later)\s*,?\s*|(?:and|but|while|whereas|with|which|so|yet|"
    r"although|though|as well as)\s+|we (?:can )?(?:see|hear|observe|notice|infer|conclude|tell) (?:that )?|"
    r"(?:indicating|suggesting|implying|revealing|showing) that\s+)",
    re.I,
)
_SUBTITLE_ONLY = re.compile(
    r"^(?:in the text,?\s*)?(?:the )?(?:subtitle|text|character|speaker|person|man|woman|lady|he|she|they)?\s*"
    r"(?:says?|said|reads?|states?|is|content is|mentions?)?\s*[,:]?\s*$",
    re.I,
)
_BASED_ON = re.compile(r"^\s*(?:based on|considering|combining|given|taking)\b", re.I)
_CONCLUSION = re.compile(r"^\s*we (?:can )?(?:infer|conclude|tell)\b", re.I)
_PARTICIPLE = {
    "indicating": "Indicates",
    "suggesting": "Suggests",
    "implying": "Implies",
    "revealing": "Reveals",
    "showing": "Shows",
}
_SECTION = {
    "visual": re.compile(r"^\s*in the (?:video|image|clip|footage|scene)\b", re.I),
    "auditory": re.compile(r"^\s*in the audio\b", re.I),
    "text": re.compile(r"^\s*in the text\b|\bsubtitle\b", re.I),
    "emotional": re.compile(
        r"^\s*(?:based on|therefore|overall|in summary|in conclusion|taken together|combining|considering)\b", re.I
    ),
}


@dataclass
class Clause:
    text: str
    section: str  # visual | auditory | text | emotional | none
    category: str = ""


def _tidy(s: str) -> str:
    s = s.strip(" ,;:-\u2014")
    for _ in range(3):
        s2 = _LEAD.sub("", s).strip(" ,;:-")
        if s2 == s:
            break
        s = s2
    if not s:
        return ""
    m = re.match(r"(indicating|suggesting|implying|revealing|showing)\s+", s, re.I)
    if m:
        s = _PARTICIPLE[m.group(1).lower()] + " " + s[m.end() :]
    if re.match(r"(?:is|are|was|were)\b", s):
        s = "This " + s  # "…, which is a natural reaction" -> "This is a natural reaction"
    s = s[0].upper() + s[1:]
    return s if s[-1] in ".!?" else s + "."


class OfflineExtractor:
    """Segments and assigns clauses; `embedder` (MiniLM by default) supplies the prototype similarity."""

    name = "offline"

    def __init__(self, embedder: Embedder, emb_weight: float = 3.0, min_words: int = 3) -> None:
        self.embedder = embedder
        self.emb_weight = emb_weight
        self.min_words = min_words
        self._protos: dict[str, np.ndarray] | None = None

    def _prototypes(self) -> dict[str, np.ndarray]:
        if self._protos is None:
            self._protos = {c: self.embedder.encode(PROTOTYPES[c]) for c in CATEGORIES}
        return self._protos

    def warmup(self) -> None:
        """Load the embedder and the prototypes, so per-clip extraction times exclude model loading."""
        self._prototypes()

    def segment(self, text: str) -> tuple[list[Clause], list[str]]:
        """Clauses with their section, and the quotations found (in order)."""
        quotes: list[str] = []

        def hold(m: re.Match[str]) -> str:
            q = next(g for g in m.groups() if g is not None).strip()
            quotes.append(q)
            # A quotation that ends a sentence keeps the sentence boundary after it is cut out.
            return f" QUOTE{len(quotes) - 1}{'.' if q[-1:] in '.!?' else ''} "

        body = _QUOTE.sub(hold, " ".join(text.split()))
        clauses: list[Clause] = []
        section = "none"
        for sent in _SENT.split(body):
            for name, rx in _SECTION.items():
                if rx.search(sent):
                    section = name
                    break
            # "Based on A, as well as B, we can infer C": A and B restate cues as evidence for the
            # inference, which the reference extractions file under emotional.
            reasoning = bool(_BASED_ON.match(sent))
            for part in _CLAUSE.split(sent):
                part = re.sub(r"\s*QUOTE\d+\.?\s*", " ", part).strip()
                if _SUBTITLE_ONLY.match(part.rstrip(" .!?")):
                    continue
                if _CONCLUSION.match(part):
                    reasoning = False
                clauses.append(Clause(part, "reasoning" if reasoning else section))
        return clauses, quotes

    def classify(self, clauses: list[Clause]) -> None:
        if not clauses:
            return
        protos = self._prototypes()
        emb = self.embedder.encode([c.text for c in clauses])
        sims = {cat: (emb @ protos[cat].T).max(axis=1) for cat in CATEGORIES}
        for i, c in enumerate(clauses):
            if c.section == "reasoning":
                c.category = "emotional"
                continue
            t = c.text
            lex = {
                "visual": 1.0 * len(_VISUAL.findall(t)),
                "auditory": 1.2 * len(_AUDITORY.findall(t)),
                "emotional": 0.8 * len(_INFER.findall(t)),
            }
            prior = {cat: 0.0 for cat in CATEGORIES}
            if c.section in ("visual", "auditory"):
                prior[c.section] = 0.6
            elif c.section == "emotional":
                prior["emotional"] = 1.5  # "Based on …, we can infer …": reasoning, even where it names cues
            elif c.section == "text":
                prior["emotional"] = 0.6  # after the subtitle the description interprets the words
            score = {cat: self.emb_weight * float(sims[cat][i]) + lex[cat] + prior[cat] for cat in CATEGORIES}
            c.category = max(CATEGORIES, key=lambda k: score[k])

    def extract(self, text: str) -> Cues:
        clauses, quotes = self.segment(text or "")
        clauses = [c for c in clauses if len(c.text.split()) >= self.min_words]
        for c in clauses:
            c.text = _tidy(c.text)
        clauses = [c for c in clauses if c.text and len(c.text.split()) >= self.min_words]
        self.classify(clauses)
        out: Cues = {cat: [] for cat in CATEGORIES}
        for c in clauses:
            if c.text not in out[c.category]:
                out[c.category].append(c.text)
        out["auditory"] += [f"Subtitle text: '{q}'" for q in quotes]
        return out

    def extract_many(self, texts: dict[str, str]) -> dict[str, Cues]:
        return {k: self.extract(v) for k, v in texts.items()}

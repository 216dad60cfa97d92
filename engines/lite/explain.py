"""Explanations grounded by construction: a per-answer grammar whose sentences are made of this answer's cues.

The model writes one sentence per modality that has cues, in the EMER order ("In the video, ...", "In the
audio, ...", "In the text, ..."). Each sentence states the cues offered for its modality (its most salient ones,
at most MAX_CUES_PER_MODALITY: engines/lite/salience.py), each exactly once and in the order the model chooses (a
bitset per sentence in llguidance's parametric Lark rules), joined by a closed set of connectives. Stating all of
them keeps a small model from dropping the cues it was shown (it states two and stops, as the worked examples do,
whatever the clip). Every connective ends a clause the way cue extractors split clauses (a comma before a
conjunction, or a semicolon), so each stated cue stays one atomic claim. After each sentence the model reads it, as EMER
descriptions read each modality ("This suggests a cheerful mood."), with one of a closed set of readings tied to
the chosen label (and to the runner-up when the scores are close); a reading is used at most once per explanation
(a bitset threaded through the sentences), so every emotional inference is a different one, and a sentence goes
unread only when every reading it allows is used. Nothing else can be produced: a phrase of the worked
examples reaches an answer only if it is also one of its cues.

`Explainer` builds the grammar, turns the streamed text into segments as their sentences complete (each
observation cites the ids of the cues it states, an interpretation those of the sentence it reads), and writes the
conclusion in the words EMER annotators close with, which agrees with the label by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from engines.lite.salience import ranked
from engines.types import Cue, Modality, Segment

MODALITIES: tuple[Modality, ...] = ("visual", "auditory", "verbal")
OPENERS: dict[Modality, str] = {"visual": "In the video, ", "auditory": "In the audio, ", "verbal": "In the text, "}
CONNECTIVES: tuple[str, ...] = (", and ", "; ", ", while ")
# How a modality's sentence is read ("In the audio, ... This indicates ...").
INTERPRETS: dict[Modality, str] = {"visual": " This suggests ", "auditory": " This indicates ",
                                   "verbal": " This implies "}
# The closed set of readings per label: the label's noun, then up to two states that at least two EMER descriptions of
# that emotion name (most named first), leaving out those that descriptions of an emotion of the other valence name
# too, such as "excitement" for both anger and joy (bench/cue_phrasing.py counts them). A label without such
# descriptions is read as its noun alone.
READINGS: dict[str, tuple[str, ...]] = {
    "happy": ("happiness", "a cheerful mood", "satisfaction"),
    "sad": ("sadness", "helplessness", "sorrow"),
    "angry": ("anger", "dissatisfaction", "impatience"),
    "worried": ("worry", "concern"),
    "neutral": ("a composed state",),
}
# A reading must not contradict the sentence it reads: after a sentence whose cues include one of clear valence
# (a smile, negative wording), only labels of that valence or of none (surprise, neutral) may be read.
VALENCE: dict[str, int] = {"happy": 1, "sad": -1, "angry": -1, "worried": -1, "fear": -1, "disgust": -1}
_CUE_VALENCE: tuple[tuple[str, int], ...] = (  # substrings of cue phrases, the first match counts
    ("smile fades", -1), ("mouth turn down", -1), ("mouth pull down", -1), ("negative wording", -1),
    ("words express anger", -1), ("words express sadness", -1), ("words express worry", -1),
    ("words express frustration", -1), ("looks sad", -1), ("looks angry", -1), ("looks fearful", -1),
    ("looks disgusted", -1), ("smil", 1), ("mouth turn up", 1), ("from down to up", 1), ("positive wording", 1),
    ("words express joy", 1), ("looks happy", 1), ("laughs", 1),
)
# The closing inference, in the form EMER descriptions end with.
CONCLUDE = " It can be inferred that the person's emotional state is "
ADJECTIVES: dict[str, str] = {"surprise": "surprised", "fear": "fearful", "disgust": "disgusted"}
# When the runner-up's probability is at least this share of the label's, the conclusion names it.
CLOSE_RATIO = 0.6
MAX_CUES_PER_MODALITY = 3  # the most salient ones, as the prompt shows them
_NOUN_HEADS = {"brows", "lips", "eyebrows", "eyes", "pauses", "tears", "cheeks", "hands"}
_CARRIER: dict[Modality, str] = {"visual": "the face shows ", "auditory": "the audio has ", "verbal": "the text has "}


def clause(cue: Cue) -> str:
    """The cue's phrase as a clause with a subject ("smiles" -> "the person smiles"); the phrase itself is kept."""
    t = cue.text.strip()
    if t.startswith("says: "):
        return "the person says " + t[len("says: "):]
    first = t.split(" ", 1)[0].lower()
    if first in ("the", "his", "her", "their"):
        return t
    if first.endswith("s") and first not in _NOUN_HEADS:  # a verb in the third person: "smiles", "looks down"
        return "the person " + t
    return _CARRIER[cue.modality] + t


def readings(label: str) -> tuple[str, ...]:
    return READINGS.get(label, (label,))


def interpretation(modality: Modality, reading: str) -> str:
    """The sentence that reads a modality's cues: " This suggests a cheerful mood." after the video."""
    return INTERPRETS[modality] + reading + "."


def cue_valence(text: str) -> int:
    """+1 or -1 for a cue phrase of clear valence, 0 otherwise."""
    t = text.lower()
    return next((v for key, v in _CUE_VALENCE if key in t), 0)


def adjective(label: str) -> str:
    return ADJECTIVES.get(label, label)


def chosen_cues(cues: list[Cue]) -> dict[Modality, list[Cue]]:
    """Per modality, the most salient cues (at most MAX_CUES_PER_MODALITY), most salient first (salience.py)."""
    out: dict[Modality, list[Cue]] = {}
    for m in MODALITIES:
        mine = ranked([c for c in cues if c.modality == m])[:MAX_CUES_PER_MODALITY]
        if mine:
            out[m] = mine
    return out


def runner_up(scores: dict[str, float], label: str) -> str | None:
    rest = sorted(((p, lb) for lb, p in scores.items() if lb != label), reverse=True)
    if not rest or scores.get(label, 0.0) <= 0:
        return None
    p, lb = rest[0]
    return lb if p >= CLOSE_RATIO * scores[label] else None


def conclusion(label: str, runner: str | None) -> str:
    if runner:
        return f"{CONCLUDE}{adjective(label)}, or possibly {adjective(runner)}."
    return f"{CONCLUDE}{adjective(label)}."


@dataclass
class _Sentence:
    modality: Modality
    clauses: list[tuple[str, str]]  # (clause text, cue id), the model picks among them
    valences: set[int] = field(default_factory=set)  # the clear valences among its cues


@dataclass
class Explainer:
    """The grammar and the segmenter of one answer's explanation."""

    cues: list[Cue]
    label: str
    scores: dict[str, float]
    sentences: list[_Sentence] = field(init=False)
    readings: list[str] = field(init=False)
    runner: str | None = field(init=False)

    def __post_init__(self) -> None:
        chosen = chosen_cues(self.cues)
        self.sentences = []
        for m, cs in chosen.items():
            seen: dict[str, str] = {}
            for c in cs:
                seen.setdefault(clause(c), c.id)  # two cues with one phrase would be one claim
            self.sentences.append(_Sentence(m, list(seen.items()), {cue_valence(c.text) for c in cs} - {0}))
        self.runner = runner_up(self.scores, self.label)
        # (reading, label) pairs; a reading's index is its bit in the grammar
        self._reads = list({r: lb for lb in (self.label, self.runner) if lb for r in readings(lb)}.items())
        self.readings = [r for r, _ in self._reads]
        if len(self.readings) > 63:  # one bit each in llguidance's 64-bit parameter; bit 63 stays clear
            raise ValueError("too many readings for one explanation")

    def _allowed(self, s: _Sentence) -> list[tuple[int, str]]:
        """(bit, reading) of the readings that may follow sentence `s`: none that its cues contradict."""
        return [(j, r) for j, (r, lb) in enumerate(self._reads)
                if not any(v == -VALENCE.get(lb, 0) for v in s.valences)]

    def interpretations(self, modality: Modality) -> list[str]:
        """The readings the model may add after the sentence of `modality`: the label's and the runner-up's, except
        those its cues contradict."""
        s = next((s for s in self.sentences if s.modality == modality), None)
        return [interpretation(modality, r) for _, r in self._allowed(s)] if s else []

    @property
    def empty(self) -> bool:
        return not self.sentences

    # -- the grammar ---------------------------------------------------------------------------------------
    def grammar(self) -> str:
        """Lark for llguidance: the sentences in order, each a set of its cue clauses without repeats, each read
        by a reading not used before while one is left (s{k} carries the readings used so far as its parameter)."""
        if self.empty:
            raise ValueError("no cues to explain")
        q = lambda s: json.dumps(s, ensure_ascii=False)  # noqa: E731 - one-line quoting helper
        conn = " | ".join(q(c) for c in CONNECTIVES)
        lines = ["start: s0::0x0"]
        last = len(self.sentences) - 1
        for k, s in enumerate(self.sentences):
            n = len(s.clauses)
            after = "" if k == last else f" s{k + 1}::_"  # the next sentence, with the readings used so far
            allowed = self._allowed(s)
            reads = [f"{q(INTERPRETS[s.modality] + r + '.')}"
                     + ("" if k == last else f" s{k + 1}::set_bit({j})") + f" %if bit_clear({j})"
                     for j, r in allowed]
            # Unread only once every reading it allows is used: z{k}_i checks one used bit each (a chain, since
            # a condition tests one range of bits), the last one goes on. A parametric rule must use its
            # parameter, so the empty ending tests bit 63, which no reading has (at most 63 of them).
            end = after.strip() or f"{q('')} %if bit_clear(63)"
            lines.append(f"s{k}::_ : {q(' ' + OPENERS[s.modality])} p{k}::0x0 r{k}::_")
            lines.append(f"r{k}::_ : " + "\n    | ".join([*reads, f"z{k}_0::_" if allowed else end]))
            for i, (j, _) in enumerate(allowed):
                nxt = f"z{k}_{i + 1}::_" if i + 1 < len(allowed) else after.strip() or q("")
                lines.append(f"z{k}_{i}::_ : {nxt} %if is_ones([{j}:{j + 1}])")
            picks = [f"{q(text)} a{k}::set_bit({i}) %if bit_clear({i})" for i, (text, _) in enumerate(s.clauses)]
            lines.append(f"p{k}::_ : " + "\n    | ".join(picks))
            # the sentence ends once every offered clause is stated, and only then
            lines.append(f'a{k}::_ : "." %if is_ones([0:{n}])\n    | ({conn}) p{k}::_ %if not(is_ones([0:{n}]))')
        return "\n".join(lines) + "\n"

    def longest(self) -> str:
        """The longest text the grammar allows (to size max_tokens: a cut-off output is incomplete)."""
        conn = max(CONNECTIVES, key=len)
        return "".join(" " + OPENERS[s.modality] + conn.join(t for t, _ in s.clauses) + "."
                       + max(self.interpretations(s.modality), key=len, default="") for s in self.sentences)

    # -- segments ------------------------------------------------------------------------------------------
    def segments(self, text: str) -> list[Segment]:
        """The complete segments at the start of `text` (the model's output so far): a sentence counts once its
        period is there, so an unfinished last sentence (a cut-off output) is never a segment."""
        out: list[Segment] = []
        pos = 0
        for s in self.sentences:
            head = " " + OPENERS[s.modality]
            if not text.startswith(head, pos):
                break
            end, ids = self._sentence(text, pos + len(head), s)
            if end is None:
                break
            out.append(Segment(text[pos:end], "observation", ids))
            pos = end
            for piece in self.interpretations(s.modality):
                if text.startswith(piece, pos):
                    out.append(Segment(piece, "interpretation", list(ids)))
                    pos += len(piece)
                    break
        return out

    @staticmethod
    def _sentence(text: str, pos: int, s: _Sentence) -> tuple[int | None, list[str]]:
        """Parse clauses and connectives up to the sentence's period; (end, cited ids) or (None, []) if the
        sentence is not complete yet. Longer clauses are tried first, and the parse backtracks."""
        order = sorted(range(len(s.clauses)), key=lambda i: -len(s.clauses[i][0]))

        def walk(p: int, used: frozenset[int]) -> tuple[int, list[int]] | None:
            for i in order:
                if i in used or not text.startswith(s.clauses[i][0], p):
                    continue
                q = p + len(s.clauses[i][0])
                if text.startswith(".", q):
                    return q + 1, [i]
                for c in CONNECTIVES:
                    if text.startswith(c, q):
                        rest = walk(q + len(c), used | {i})
                        if rest is not None:
                            return rest[0], [i, *rest[1]]
            return None

        got = walk(pos, frozenset())
        if got is None:
            return None, []
        return got[0], [s.clauses[i][1] for i in got[1]]

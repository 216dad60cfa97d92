"""Cue phrases that cannot both hold at the same moment, and a finder for such pairs in one answer.

Perception resolves these before an answer is built (the dominant cue wins, or the pair becomes a change over
time; engines/perception/resolve.py); `unresolved_opposites` is the check that none are left, used by tests and
`bench/quality.py`.
"""

from __future__ import annotations

from engines.types import Cue

# Each entry: (phrases of one side, phrases of the other side), matched as substrings of the cue text.
OPPOSITES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("mouth turn up", "smile"), ("mouth turn down", "mouth pull down")),
    (("raises the eyebrows", "eyebrows raised"), ("brows are furrowed", "brows are deeply furrowed",
                                                  "inner brows lower", "frowns")),
    (("eyes widen", "eyes open wide", "eyes open a little wider"), ("eyes squint", "eyes narrow")),
    (("voice is loud",), ("voice is quiet", "whisper")),
    (("high-pitched",), ("low-pitched",)),
    (("tone is monotonous",), ("tone rises and falls",)),
    (("speaks quickly",), ("speaks slowly",)),
    (("tone is calm",), ("intense tone",)),
    (("words express joy", "positive wording"), ("words express anger", "words express sadness",
                                                 "words express worry", "words express frustration",
                                                 "negative wording")),
    (("mouth opens", "mouth falls wide open", "jaw drops"), ("lips pressed together",)),
    (("nods",), ("shakes the head",)),
)

# The same families stated as one change over time, for when one side clearly follows the other:
# (side 0 then side 1, side 1 then side 0). Each phrase says only that the first state gave way to the second.
CHANGES: tuple[tuple[str, str], ...] = (
    ("the smile fades", "the mouth corners turn from down to up"),
    ("the raised brows furrow", "the furrowed brows lift"),
    ("the wide eyes narrow", "the narrowed eyes widen"),
    ("the voice grows softer", "the voice grows louder"),
    ("the pitch drops", "the pitch rises"),
    ("the monotonous tone starts to rise and fall", "the rising and falling tone turns monotonous"),
    ("the speech slows down", "the speech speeds up"),
    ("the tone turns from calm to intense", "the tone turns from intense to calm"),
    ("the wording turns negative", "the wording turns positive"),
    ("the open mouth closes and the lips press together", "the pressed lips part"),
    ("the nodding gives way to a head shake", "the head shake gives way to nodding"),
)
assert len(CHANGES) == len(OPPOSITES)


def side(text: str) -> tuple[int, int] | None:
    """(pair index, 0 or 1) of the first opposite family the phrase belongs to, else None."""
    t = text.lower()
    for i, (a, b) in enumerate(OPPOSITES):
        if any(p in t for p in a):
            return i, 0
        if any(p in t for p in b):
            return i, 1
    return None


def overlaps(a: Cue, b: Cue) -> bool:
    """Time spans overlap; a cue without a span covers the whole clip."""
    if a.start is None or a.end is None or b.start is None or b.end is None:
        return True
    return a.start < b.end and b.start < a.end


def unresolved_opposites(cues: list[Cue]) -> list[tuple[Cue, Cue]]:
    """Pairs of cues of the same modality from opposite sides of one family whose time spans overlap."""
    sides = [side(c.text) for c in cues]
    out = []
    for i, a in enumerate(cues):
        for j in range(i + 1, len(cues)):
            b = cues[j]
            sa, sb = sides[i], sides[j]
            if sa and sb and sa[0] == sb[0] and sa[1] != sb[1] and a.modality == b.modality and overlaps(a, b):
                out.append((a, b))
    return out

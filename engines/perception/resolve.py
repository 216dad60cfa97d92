"""Make a cue list say only what can hold at once: opposite cues resolved, at most a few cues per modality.

`resolve_opposites` turns each pair of opposite families (engines/perception/opposites.py) in one modality into
either one change over time, when every cue of one side ends before any cue of the other begins ("the smile
fades"), or the dominant side alone, dropping the weaker cues that overlap it. `cap_by_strength` keeps the
strongest cues of each modality. `finalize_cues` does both, in that order, for a whole answer's cue list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engines.perception.opposites import CHANGES, overlaps, side
from engines.types import Cue


def _brief(c: Cue) -> dict[str, Any]:
    return {"text": c.text, "start": c.start, "end": c.end, "strength": c.strength}


def _duration(cues: list[Cue]) -> float:
    return sum((c.end - c.start) for c in cues if c.start is not None and c.end is not None)


def _sequential(first: list[Cue], then: list[Cue]) -> bool:
    """Every cue of `first` ends before (or as) any cue of `then` begins; cues without a span never are."""
    if any(c.start is None or c.end is None for c in first + then):
        return False
    return max(c.end for c in first) <= min(c.start for c in then)  # type: ignore[type-var]


def resolve_opposites(cues: list[Cue]) -> list[Cue]:
    """A new list (cue order kept) in which no two cues of one modality are opposite and overlap in time."""
    groups: dict[tuple[str, int], tuple[list[Cue], list[Cue]]] = {}
    for c in cues:
        s = side(c.text)
        if s is not None:
            groups.setdefault((c.modality, s[0]), ([], []))[s[1]].append(c)
    drop: set[int] = set()
    replace: dict[int, Cue] = {}  # id of the first cue of a family -> the change cue that takes its place
    for (modality, family), (a, b) in groups.items():
        if not a or not b:
            continue
        for first, then, text in ((a, b, CHANGES[family][0]), (b, a, CHANGES[family][1])):
            if _sequential(first, then):
                f, t = max(first, key=lambda c: c.strength), max(then, key=lambda c: c.strength)
                members = sorted(first + then, key=lambda c: c.start or 0.0)
                change = Cue(modality, text, start=members[0].start, end=max(c.end or 0.0 for c in members),
                             strength=round((f.strength + t.strength) / 2, 3),
                             evidence={"resolved": "change over time", "from": _brief(f), "to": _brief(t),
                                       "from_evidence": f.evidence, "to_evidence": t.evidence})
                drop.update(id(c) for c in members)
                replace[id(members[0])] = change
                break
        else:
            sa, sb = max(c.strength for c in a), max(c.strength for c in b)
            win, lose = (a, b) if (sa, _duration(a)) >= (sb, _duration(b)) else (b, a)
            beaten = [c for c in lose if any(overlaps(c, w) for w in win)]
            if beaten:
                top = max(win, key=lambda c: c.strength)
                top.evidence = {**top.evidence, "outweighs": [_brief(c) for c in beaten]}
                drop.update(id(c) for c in beaten)
    out = []
    for c in cues:
        if id(c) in replace:
            out.append(replace[id(c)])
        elif id(c) not in drop:
            out.append(c)
    return out


def cap_by_strength(cues: list[Cue], limits: Mapping[str, int]) -> list[Cue]:
    """Keep the `limits[modality]` strongest cues of each modality (all of a modality without a limit), in the
    list's order. Ties go to the earlier cue."""
    keep: set[int] = set()
    for modality in {c.modality for c in cues}:
        mine = [c for c in cues if c.modality == modality]
        n = limits.get(modality)
        ranked = mine if n is None else sorted(mine, key=lambda c: -c.strength)[: max(0, n)]
        keep.update(id(c) for c in ranked)
    return [c for c in cues if id(c) in keep]


def finalize_cues(cues: list[Cue], limits: Mapping[str, int]) -> list[Cue]:
    """An answer's cue list as it should be stated: opposites resolved, then capped per modality by strength.
    Call it on the whole list (all modalities, any cues added after perception) before `assign_cue_ids`."""
    return cap_by_strength(resolve_opposites(cues), limits)

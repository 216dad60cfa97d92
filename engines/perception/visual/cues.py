"""Per-frame facial measures (geometry.py) and FER probabilities -> short EMER-style visual cues.

A frame counts for a cue when its measure passes a fixed threshold (an expression held through the whole clip)
or departs from the clip's own baseline, the median over the frames with a face (a change against the person's
resting face). Every cue carries its time span, a 0..1 strength and the numbers it rests on. Thresholds are in
inter-ocular-distance units (degrees for head pose) and were set on the skimage astronaut (a broad smile) and on
the shared MER sample (a woman smiling while talking on the phone). Phrases follow the wording EMER descriptions
use for the same action where it differs clearly (bench/cue_phrasing.py: "the brows are furrowed").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.perception.visual.fer import FER_LABELS
from engines.types import Cue

MIN_BASELINE_FRAMES = 4  # below this the clip's median is no baseline, only fixed thresholds apply


@dataclass(frozen=True)
class Rule:
    """One facial action: which measure, which way, fixed and baseline-relative thresholds, phrasing."""

    name: str
    measure: str
    sign: int  # +1: larger values are the action, -1: smaller values
    fixed: float  # absolute threshold
    full: float  # value at which strength reaches 1
    delta: float  # departure from the clip baseline that counts
    texts: tuple[str, str, str]  # weak, medium, strong phrasing
    fer: tuple[str, ...] = ()  # FER classes whose probability strengthens the cue
    relative: bool = False  # delta is a fraction of the baseline instead of an absolute difference


RULES = (
    Rule("corners_up", "corner_lift", +1, 0.04, 0.12, 0.04,
         ("the corners of the mouth turn up slightly", "the corners of the mouth turn up",
          "the corners of the mouth turn up clearly"), ("happy",)),
    Rule("corners_down", "corner_lift", -1, -0.04, -0.10, 0.04,
         ("the corners of the mouth turn down slightly", "the corners of the mouth turn down",
          "the corners of the mouth pull down"), ("sad",)),
    Rule("lip_stretch", "mouth_width", +1, 0.82, 0.95, 0.08,  # corner pull without a smile (dropped if smiling)
         ("the lips stretch slightly", "the lips stretch sideways", "the lips stretch wide"), ("fear",)),
    Rule("mouth_open", "mouth_open", +1, 0.30, 0.45, 1.0,  # speech opens the mouth all the time: fixed only
         ("the mouth opens", "the mouth opens wide", "the mouth falls wide open"), ("surprise", "fear")),
    Rule("jaw_drop", "jaw_drop", +1, 1.10, 1.25, 0.12,
         ("the jaw drops slightly", "the jaw drops", "the jaw drops wide"), ("surprise",)),
    Rule("brow_raise", "brow_raise", +1, 0.32, 0.42, 0.06,
         ("raises the eyebrows slightly", "raises the eyebrows", "eyebrows raised high"), ("surprise", "fear")),
    Rule("brow_furrow", "brow_gap", -1, 0.21, 0.15, 0.04,
         ("the brows are furrowed slightly", "the brows are furrowed", "the brows are deeply furrowed"),
         ("angry", "disgust")),
    Rule("brow_lower", "brow_inner_height", -1, 0.08, 0.03, 0.04,
         ("the inner brows lower slightly", "the inner brows lower", "frowns deeply"), ("angry", "sad")),
    Rule("eyes_widen", "eye_open", +1, 0.16, 0.22, 0.30,
         ("the eyes open a little wider", "the eyes widen", "the eyes open wide"), ("surprise", "fear"),
         relative=True),
    Rule("head_tilt", "roll", 0, 12.0, 25.0, 8.0,  # sign 0: either side
         ("tilts the head slightly", "tilts the head to one side", "tilts the head strongly to one side")),
    Rule("look_down", "pitch", +1, 15.0, 30.0, 10.0,
         ("lowers the head slightly", "looks down", "looks far down")),
    Rule("head_turn", "yaw", 0, 30.0, 50.0, 15.0,
         ("turns the head slightly aside", "turns the head aside", "turns the head away")),
)

# Lip press: the visible red of the lips thins while the mouth stays shut.
LIP_PRESS_FIXED, LIP_PRESS_FULL, LIP_PRESS_REL = 0.07, 0.03, 0.65
MOUTH_SHUT = 0.03
# Smile: corners up and either pulled wide or read as happy by the FER model.
SMILE_WIDTH, SMILE_WIDTH_FULL, SMILE_WIDTH_DELTA = 0.64, 0.75, 0.05
SMILE_FER_HAPPY, SMILE_FER_LIFT = 0.6, 0.02
# Eyes: a short closure is a blink, a longer narrowing a squint.
BLINK_CLOSED, BLINK_REL = 0.045, 0.5
SQUINT_NARROW, SQUINT_REL = 0.075, 0.8
BLINK_MAX_S = 0.4
# Nods and shakes: at least two reversals of the head angle larger than this, each within SWING_MAX_S.
SWING_MIN_DEG, SWING_MAX_S, SWING_FULL_DEG = 4.0, 1.5, 15.0
FER_WEIGHT = 0.5


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def _strength_texts(s: float, texts: tuple[str, str, str]) -> str:
    return texts[0] if s < 0.4 else texts[1] if s < 0.8 else texts[2]


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [i, j] of consecutive True values."""
    out, start = [], None
    for i, a in enumerate(active):
        if a and start is None:
            start = i
        elif not a and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(active) - 1))
    return out


class ClipCues:
    """Cue extraction for one clip. `rows` are per-frame measures (None where no face), `fer` (N, 7) or None."""

    def __init__(self, times: list[float], rows: list[dict[str, float] | None], fer: np.ndarray | None) -> None:
        self.t = np.asarray(times, dtype=np.float64)
        self.face = np.array([r is not None for r in rows], dtype=bool)
        self.n_face = int(self.face.sum())
        self.rows = rows
        self.fer = fer
        self.min_frames = 1 if self.n_face < 8 else 2

    def series(self, key: str) -> np.ndarray:
        return np.array([r[key] if r is not None else np.nan for r in self.rows], dtype=np.float64)

    def baseline(self, v: np.ndarray) -> float | None:
        if int(np.isfinite(v).sum()) < MIN_BASELINE_FRAMES:
            return None
        return float(np.nanmedian(v))

    def fer_mean(self, label: str, mask: np.ndarray) -> float | None:
        if self.fer is None or not mask.any():
            return None
        return float(np.nanmean(self.fer[mask, FER_LABELS.index(label)]))

    def make(self, text_for: Callable[[float], str], name: str, measure: str, mask: np.ndarray,
             strength: float, evidence: dict) -> Cue | None:
        if int(mask.sum()) < self.min_frames:
            return None
        idx = np.flatnonzero(mask)
        segs = [[_r(self.t[idx[0] + a], 2), _r(self.t[idx[0] + b], 2)] for a, b in _runs(mask[idx[0]: idx[-1] + 1])]
        s = float(np.clip(strength, 0.0, 1.0))
        ev = {"action": name, "measure": measure, "frames": f"{int(mask.sum())}/{self.n_face}", "segments": segs,
              **evidence}
        return Cue("visual", text_for(s), start=_r(self.t[idx[0]], 2), end=_r(self.t[idx[-1]], 2),
                   strength=_r(s, 2), evidence=ev)

    def _boost(self, s: float, labels: tuple[str, ...], mask: np.ndarray, ev: dict) -> float:
        """Raise a geometric strength by the FER probability of the matching expression classes."""
        for lb in labels:
            p = self.fer_mean(lb, mask)
            if p is not None:
                ev[f"fer_{lb}"] = _r(p)
                s = 1 - (1 - s) * (1 - FER_WEIGHT * p)
        return s

    def rule(self, rule: Rule) -> tuple[Cue | None, np.ndarray]:
        v = self.series(rule.measure)
        base = self.baseline(v)
        sign = rule.sign or 1
        val = np.abs(v) if rule.sign == 0 else v
        fixed_hit = self.face & (sign * (val - rule.fixed) >= 0)
        if base is not None:
            dev = np.abs(v - base) if rule.sign == 0 else sign * (v - base)
            need = rule.delta * abs(base) if rule.relative else rule.delta
            base_hit = self.face & (dev >= need)
        else:
            base_hit = np.zeros_like(self.face)
        mask = fixed_hit | base_hit
        if not mask.any():
            return None, mask
        # Strength: how far past the fixed threshold (or past baseline + delta) the mean active value goes.
        mv = float(np.mean(val[mask]))
        span = abs(rule.full - rule.fixed)
        s_fixed = sign * (mv - rule.fixed) / span
        s = s_fixed
        if base is not None and base_hit.any():
            need = rule.delta * abs(base) if rule.relative else rule.delta
            bdev = float(np.mean(np.abs(v[mask] - base) if rule.sign == 0 else sign * (v[mask] - base)))
            s = max(s, (bdev - need) / max(span, need))
        s = 0.3 + 0.7 * float(np.clip(s, 0, 1))
        basis = "+".join(b for b, m in (("fixed", fixed_hit), ("baseline", base_hit)) if m.any())
        ev = {"basis": basis, "mean": _r(np.mean(v[mask])), "peak": _r(v[mask][np.argmax(sign * val[mask])]),
              "threshold": rule.fixed, "baseline": None if base is None else _r(base)}
        s = self._boost(s, rule.fer, mask, ev)
        return self.make(lambda x: _strength_texts(x, rule.texts), rule.name, rule.measure, mask, s, ev), mask

    def smile(self, corners_up: np.ndarray) -> Cue | None:
        lift, width = self.series("corner_lift"), self.series("mouth_width")
        wbase = self.baseline(width)
        pulled = self.face & ((width >= SMILE_WIDTH) | ((width - wbase >= SMILE_WIDTH_DELTA)
                                                        if wbase is not None else False))
        happy = (self.fer[:, FER_LABELS.index("happy")] if self.fer is not None
                 else np.zeros(len(self.t)))
        happy_face = self.face & (happy >= SMILE_FER_HAPPY) & (lift >= SMILE_FER_LIFT)
        mask = (corners_up & (pulled | (happy >= SMILE_FER_HAPPY))) | happy_face
        if not mask.any():
            return None
        lift_s = np.clip((lift[mask] - 0.02) / 0.10, 0, 1)
        width_s = np.clip((width[mask] - 0.60) / (SMILE_WIDTH_FULL - 0.60), 0, 1)
        s = float(np.mean(0.6 * lift_s + 0.4 * width_s))
        ev = {"basis": "geometry+fer" if happy_face.any() else "geometry",
              "corner_lift": _r(np.mean(lift[mask])), "mouth_width": _r(np.mean(width[mask])),
              "width_baseline": None if wbase is None else _r(wbase)}
        s = self._boost(s, ("happy",), mask, ev)
        return self.make(lambda x: _strength_texts(x, ("smiles slightly", "smiles", "smiles broadly")),
                         "smile", "corner_lift+mouth_width", mask, s, ev)

    def lip_press(self) -> Cue | None:
        thick, opened = self.series("lip_thickness"), self.series("mouth_open")
        base = self.baseline(thick)
        shut = self.face & (opened <= MOUTH_SHUT)
        fixed_hit = shut & (thick <= LIP_PRESS_FIXED)
        base_hit = shut & (thick <= LIP_PRESS_REL * base) if base is not None else np.zeros_like(shut)
        mask = fixed_hit | base_hit
        if not mask.any():
            return None
        mv = float(np.mean(thick[mask]))
        s = 0.3 + 0.7 * float(np.clip((LIP_PRESS_FIXED - mv) / (LIP_PRESS_FIXED - LIP_PRESS_FULL), 0, 1))
        ev = {"basis": "+".join(b for b, m in (("fixed", fixed_hit), ("baseline", base_hit)) if m.any()),
              "mean": _r(mv), "threshold": LIP_PRESS_FIXED, "baseline": None if base is None else _r(base)}
        s = self._boost(s, ("angry",), mask, ev)
        return self.make(lambda x: "lips pressed together" if x >= 0.4 else "lips pressed together slightly",
                         "lip_press", "lip_thickness", mask, s, ev)

    def eyes(self) -> list[Cue]:
        """Blinks (short closures) and squints (longer narrowing) from the lid gap over time."""
        eo = self.series("eye_open")
        base = self.baseline(eo)
        closed_thr = max(BLINK_CLOSED, BLINK_REL * base) if base is not None else BLINK_CLOSED
        narrow_thr = max(SQUINT_NARROW, SQUINT_REL * base) if base is not None else SQUINT_NARROW
        narrow = self.face & (eo <= narrow_thr)
        blink_mask = np.zeros_like(narrow)
        squint_mask = np.zeros_like(narrow)
        blinks = 0
        for a, b in _runs(narrow):
            dur = self.t[b] - self.t[a]
            closed = bool((eo[a: b + 1] <= closed_thr).any())
            if dur < BLINK_MAX_S and closed and (b - a) < 2:
                blinks += 1
                blink_mask[a: b + 1] = True
            elif dur >= BLINK_MAX_S or b > a:
                squint_mask[a: b + 1] = True
        out: list[Cue] = []
        if squint_mask.any():
            mv = float(np.mean(eo[squint_mask]))
            ref = base if base is not None else 0.11
            s = 0.3 + 0.7 * float(np.clip((narrow_thr - mv) / max(narrow_thr - 0.02, 1e-6), 0, 1))
            ev = {"basis": "fixed" if narrow_thr == SQUINT_NARROW else "baseline", "mean": _r(mv),
                  "threshold": _r(narrow_thr), "baseline": _r(ref)}
            s = self._boost(s, ("happy",), squint_mask, ev)  # a Duchenne smile narrows the eyes
            c = self.make(lambda x: "the eyes squint slightly" if x < 0.6 else "the eyes squint",
                          "squint", "eye_open", squint_mask, s, ev)
            if c:
                out.append(c)
        if blinks:
            dur = max(float(self.t[self.face].max() - self.t[self.face].min()), 1e-6)
            rate = blinks / dur if self.n_face > 1 else 0.0
            s = float(np.clip(0.3 + rate / 1.0, 0, 1))
            ev = {"count": blinks, "rate_per_s": _r(rate, 2), "threshold": _r(closed_thr),
                  "baseline": None if base is None else _r(base),
                  "min_eye_open": _r(np.min(eo[blink_mask]))}
            text = "blinks frequently" if blinks >= 3 and rate >= 0.5 else "blinks"
            # a single blink in a sparse frame sample still counts: min_frames does not apply here
            idx = np.flatnonzero(blink_mask)
            out.append(Cue("visual", text, start=_r(self.t[idx[0]], 2), end=_r(self.t[idx[-1]], 2),
                           strength=_r(s, 2), evidence={"action": "blink", "measure": "eye_open", **ev}))
        return out

    def head_motion(self, measure: str, name: str, texts: tuple[str, str]) -> Cue | None:
        """Nods (pitch) and shakes (yaw): repeated reversals of the head angle, each swing quick enough."""
        v = self.series(measure)
        ok = self.face & np.isfinite(v)  # head pose is NaN in frames where the camera moved
        if ok.sum() < 3:
            return None
        tt, vv = self.t[ok], v[ok]
        # Turning points with hysteresis: a new extreme counts only after moving SWING_MIN_DEG back.
        ext_i = [0]
        direction = 0
        for i in range(1, len(vv)):
            d = vv[i] - vv[ext_i[-1]]
            if direction == 0:
                if abs(d) >= SWING_MIN_DEG:
                    direction = 1 if d > 0 else -1
                    ext_i.append(i)
            elif (d > 0) == (direction > 0):
                ext_i[-1] = i  # keeps going the same way: move the extreme
            elif abs(d) >= SWING_MIN_DEG:
                direction = -direction
                ext_i.append(i)
        swings = [(ext_i[k], ext_i[k + 1]) for k in range(len(ext_i) - 1)]
        quick = [(a, b) for a, b in swings if tt[b] - tt[a] <= SWING_MAX_S]
        if len(quick) < 2:
            return None
        amps = [abs(vv[b] - vv[a]) for a, b in quick]
        amp = float(np.max(amps))
        s = 0.3 + 0.7 * float(np.clip((amp - SWING_MIN_DEG) / (SWING_FULL_DEG - SWING_MIN_DEG), 0, 1))
        start, end = tt[quick[0][0]], tt[quick[-1][1]]
        ev = {"action": name, "measure": measure, "swings": len(quick), "max_swing_deg": _r(amp, 1),
              "threshold_deg": SWING_MIN_DEG}
        return Cue("visual", texts[0] if s < 0.6 else texts[1], start=_r(start, 2), end=_r(end, 2),
                   strength=_r(s, 2), evidence=ev)


def clip_cues(times: list[float], rows: list[dict[str, float] | None], fer: np.ndarray | None) -> list[Cue]:
    """All visual cues of one clip, ordered by start time. No face in any frame -> no cues."""
    cc = ClipCues(times, rows, fer)
    if cc.n_face == 0:
        return []
    cues: list[Cue] = []
    masks: dict[str, np.ndarray] = {}
    for rule in RULES:
        cue, mask = cc.rule(rule)
        masks[rule.name] = mask
        if cue is not None:
            cues.append(cue)
    smile = cc.smile(masks["corners_up"])
    if smile is not None:  # a smile pulls the corners wide too: one cue, not two
        cues = [c for c in cues if c.evidence["action"] != "lip_stretch"]
    for extra in (smile, cc.lip_press(),
                  cc.head_motion("pitch", "nod", ("nods slightly", "nods")),
                  cc.head_motion("yaw", "shake", ("shakes the head slightly", "shakes the head"))):
        if extra is not None:
            cues.append(extra)
    cues.extend(cc.eyes())
    cues.sort(key=lambda c: (c.start if c.start is not None else math.inf, -c.strength))
    return cues

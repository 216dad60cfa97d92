"""Facial measures and cue rules on synthetic landmark sets: each action moves its measure the right way."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.perception.visual import geometry as g
from engines.perception.visual.cues import clip_cues


def neutral_face() -> np.ndarray:
    """A frontal, level face: iod 100 px, eyes at y=100, relaxed closed mouth, brows 22 px above the eyes."""
    p = np.zeros((478, 3), dtype=np.float64)
    p[:, :2] = (200.0, 150.0)  # unused points sit at the centre; they do not enter any measure
    pts = {
        g.EYE_OUTER_R: (150, 100), g.EYE_OUTER_L: (250, 100), g.EYE_INNER_R: (180, 100), g.EYE_INNER_L: (220, 100),
        g.LID_UP_R: (165, 95), g.LID_LO_R: (165, 105), g.LID_UP_L: (235, 95), g.LID_LO_L: (235, 105),
        g.MOUTH_CORNER_R: (170, 180), g.MOUTH_CORNER_L: (230, 180),
        g.LIP_UP_OUT: (200, 174), g.LIP_UP_IN: (200, 180), g.LIP_LO_IN: (200, 180), g.LIP_LO_OUT: (200, 187),
        g.NOSE_TIP: (200, 150), g.CHIN: (200, 230), g.FOREHEAD: (200, 40),
        g.BROW_INNER_R: (186, 86), g.BROW_INNER_L: (214, 86),
    }
    for i, (x, y) in pts.items():
        p[i, :2] = (x, y)
    for k, (i, j) in enumerate(zip(g.BROW_R, g.BROW_L, strict=True)):
        p[i, :2] = (145 + 10 * k, 78)
        p[j, :2] = (255 - 10 * k, 78)
    # depth: the forehead leans back as on a real mesh, so a level face reads pitch ~ 0
    p[g.FOREHEAD, 2] = -190 * math.tan(math.radians(g.PITCH_OFFSET_DEG)) / 2
    p[g.CHIN, 2] = -p[g.FOREHEAD, 2]
    return p


def moved(p: np.ndarray, shifts: dict[int, tuple[float, float]]) -> np.ndarray:
    q = p.copy()
    for i, (dx, dy) in shifts.items():
        q[i, 0] += dx
        q[i, 1] += dy
    return q


def test_neutral_face_reads_level_and_relaxed() -> None:
    m = g.measure(neutral_face())
    assert m["iod_px"] == pytest.approx(100)
    assert m["corner_lift"] == pytest.approx(0)
    assert m["mouth_open"] == pytest.approx(0)
    assert m["eye_open"] == pytest.approx(0.10)
    assert abs(m["yaw"]) < 1e-6 and abs(m["roll"]) < 1e-6 and abs(m["pitch"]) < 0.5


def test_each_action_moves_its_measure_the_right_way() -> None:
    base = neutral_face()
    m0 = g.measure(base)
    up = g.measure(moved(base, {g.MOUTH_CORNER_R: (-4, -8), g.MOUTH_CORNER_L: (4, -8)}))
    assert up["corner_lift"] > 0.07 and up["mouth_width"] > m0["mouth_width"]
    down = g.measure(moved(base, {g.MOUTH_CORNER_R: (0, 6), g.MOUTH_CORNER_L: (0, 6)}))
    assert down["corner_lift"] < -0.05
    opened = g.measure(moved(base, {g.LIP_LO_IN: (0, 20), g.LIP_LO_OUT: (0, 20), g.CHIN: (0, 15)}))
    assert opened["mouth_open"] > 0.15 and opened["jaw_drop"] > m0["jaw_drop"]
    pressed = g.measure(moved(base, {g.LIP_UP_OUT: (0, 4), g.LIP_LO_OUT: (0, -5)}))
    assert pressed["lip_thickness"] < m0["lip_thickness"] / 3
    raised = g.measure(moved(base, {i: (0, -10) for i in (*g.BROW_R, *g.BROW_L)}))
    assert raised["brow_raise"] - m0["brow_raise"] == pytest.approx(0.10)
    furrow = g.measure(moved(base, {g.BROW_INNER_R: (6, 5), g.BROW_INNER_L: (-6, 5)}))
    assert furrow["brow_gap"] < m0["brow_gap"] and furrow["brow_inner_height"] < m0["brow_inner_height"]
    shut = g.measure(moved(base, {g.LID_UP_R: (0, 10), g.LID_UP_L: (0, 10)}))
    assert shut["eye_open"] < 0.01


def test_measures_ignore_face_size_position_and_roll() -> None:
    base = neutral_face()
    smile = moved(base, {g.MOUTH_CORNER_R: (-4, -8), g.MOUTH_CORNER_L: (4, -8)})
    ref = g.measure(smile)
    a = math.radians(20)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    other = smile.copy()
    other[:, :2] = (smile[:, :2] - 200) @ rot.T * 2.5 + (640, 360)
    other[:, 2] *= 2.5
    m = g.measure(other)
    assert m["roll"] == pytest.approx(20, abs=1e-6)
    for k in ("corner_lift", "mouth_width", "brow_raise", "brow_gap", "eye_open", "lip_thickness"):
        assert m[k] == pytest.approx(ref[k], abs=1e-9), k


def test_head_pose_signs() -> None:
    base = neutral_face()
    turned = base.copy()
    turned[g.EYE_OUTER_L, 2] += 40  # the left eye further away: the head turned
    assert g.measure(turned)["yaw"] > 15
    down = base.copy()
    down[g.CHIN, 2] += 40  # chin back, forehead forward: looking down
    down[g.FOREHEAD, 2] -= 40
    assert g.measure(down)["pitch"] > 15


def test_degenerate_mesh_is_rejected() -> None:
    with pytest.raises(ValueError):
        g.measure(np.zeros((478, 3)))


def _rows(n: int, **series: list[float]) -> list[dict[str, float]]:
    m0 = g.measure(neutral_face())
    return [m0 | {k: v[i] for k, v in series.items()} for i in range(n)]


def test_cues_relative_to_fixed_threshold_and_to_baseline() -> None:
    t = [i * 0.25 for i in range(12)]
    # A smile held through the clip: only the fixed threshold can see it (the baseline smiles too).
    held = clip_cues(t, _rows(12, corner_lift=[0.09] * 12, mouth_width=[0.85] * 12), None)
    texts = {c.text for c in held}
    assert any("smile" in x for x in texts) and any("corners of the mouth turn up" in x for x in texts)
    assert not any(c.evidence["action"] == "lip_stretch" for c in held)  # folded into the smile
    stretched = clip_cues(t, _rows(12, mouth_width=[0.9] * 12), None)
    assert [c.evidence["action"] for c in stretched] == ["lip_stretch"]
    up = next(c for c in held if c.evidence["action"] == "corners_up")
    assert up.evidence["basis"] == "fixed" and (up.start, up.end) == (0.0, 2.75)
    # Brows raised for 1 s against a resting face: below the fixed threshold, above the clip's baseline.
    brow = [0.22] * 12
    brow[4:8] = [0.30] * 4
    raised = [c for c in clip_cues(t, _rows(12, brow_raise=brow), None) if c.evidence["action"] == "brow_raise"]
    assert len(raised) == 1 and raised[0].evidence["basis"] == "baseline"
    assert (raised[0].start, raised[0].end) == (1.0, 1.75) and 0 < raised[0].strength <= 1
    assert "eyebrows" in raised[0].text


def test_resting_face_gives_no_cues_and_no_face_gives_none() -> None:
    t = [i * 0.5 for i in range(8)]
    assert clip_cues(t, _rows(8), None) == []
    assert clip_cues(t, [None] * 8, None) == []


def test_blink_squint_nod_and_shake_from_time_series() -> None:
    t = [i * 0.25 for i in range(16)]
    eye = [0.10] * 16
    eye[3] = 0.01  # one short closure
    eye[10:15] = [0.05] * 5  # 1 s of narrowed eyes
    cues = {c.evidence["action"]: c for c in clip_cues(t, _rows(16, eye_open=eye), None)}
    assert cues["blink"].evidence["count"] == 1 and cues["blink"].start == 0.75
    assert cues["squint"].start == 2.5 and cues["squint"].end == 3.5
    nod = [0, 8, 0, 8, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    cues = {c.evidence["action"]: c for c in clip_cues(t, _rows(16, pitch=nod), None)}
    assert "nod" in cues and "shake" not in cues and cues["nod"].text.startswith("nods")
    shake = {c.evidence["action"] for c in clip_cues(t, _rows(16, yaw=[(-10, 10)[i % 2] for i in range(16)]), None)}
    assert "shake" in shake and "nod" not in shake
    drift = {c.evidence["action"] for c in clip_cues(t, _rows(16, pitch=[i * 1.0 for i in range(16)]), None)}
    assert "nod" not in drift


@pytest.mark.parametrize(("action", "measure", "value", "word"), [
    ("lip_press", "lip_thickness", 0.04, "lips pressed"),
    ("brow_furrow", "brow_gap", 0.17, "brows"),
    ("brow_lower", "brow_inner_height", 0.09, "brow"),
    ("eyes_widen", "eye_open", 0.17, "eyes"),
    ("corners_down", "corner_lift", -0.07, "turn down"),
    ("mouth_open", "mouth_open", 0.4, "mouth"),
    ("head_tilt", "roll", -18.0, "tilts"),
    ("look_down", "pitch", 22.0, "down"),
    ("head_turn", "yaw", 35.0, "turns"),
])
def test_each_rule_fires_on_its_measure(action: str, measure: str, value: float, word: str) -> None:
    t = [i * 0.25 for i in range(12)]
    series = [_rows(1)[0][measure]] * 12
    series[5:9] = [value] * 4
    cues = [c for c in clip_cues(t, _rows(12, **{measure: series}), None) if c.evidence["action"] == action]
    assert len(cues) == 1 and word in cues[0].text and (cues[0].start, cues[0].end) == (1.25, 2.0)

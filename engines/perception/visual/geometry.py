"""Per-frame facial measures from MediaPipe's 478-point face mesh, normalised by the inter-ocular distance.

All distances are expressed in a face-aligned frame (origin between the outer eye corners, x along the eye line,
y pointing down the face) and divided by the inter-ocular distance, so they do not depend on image size, face
size or head roll. Head pose angles come from the mesh's 3-D coordinates. Indices follow MediaPipe's canonical
face mesh topology.
"""

from __future__ import annotations

import math

import numpy as np

# Landmark indices (MediaPipe canonical face mesh; "right"/"left" are the subject's).
EYE_OUTER_R, EYE_OUTER_L = 33, 263
EYE_INNER_R, EYE_INNER_L = 133, 362
LID_UP_R, LID_LO_R = 159, 145
LID_UP_L, LID_LO_L = 386, 374
MOUTH_CORNER_R, MOUTH_CORNER_L = 61, 291
LIP_UP_OUT, LIP_UP_IN, LIP_LO_IN, LIP_LO_OUT = 0, 13, 14, 17
NOSE_TIP, CHIN, FOREHEAD = 1, 152, 10
BROW_R = (70, 63, 105, 66, 107)  # upper contour, outer -> inner
BROW_L = (300, 293, 334, 296, 336)
BROW_INNER_R, BROW_INNER_L = 55, 285  # lower contour, inner ends

# The forehead point (10) sits in front of the chin (152) on a frontal, level face, so the forehead-chin
# axis leans back by about this much; measured on frontal photographs (skimage astronaut ~9.7 deg).
PITCH_OFFSET_DEG = 9.0

MEASURES = (
    "corner_lift",  # mouth corners above the centre of the lips (+ = up, a smile; - = down)
    "mouth_width",  # corner-to-corner distance (lip corner pull)
    "mouth_open",  # gap between the inner lips
    "jaw_drop",  # nose tip to chin
    "lip_thickness",  # visible red of both lips; shrinks when lips are pressed
    "brow_raise",  # upper brow contour above the eye line
    "brow_gap",  # distance between the inner brow ends (smaller = drawn together)
    "brow_inner_height",  # inner brow ends above the eye line (smaller = lowered, a furrow)
    "eye_open",  # mean lid gap of both eyes
    "yaw",  # degrees, head turned sideways
    "pitch",  # degrees, + = head tilted down
    "roll",  # degrees, + = head tilted towards the image right (clockwise)
)


def face_frame(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Return the 2-D landmarks in the face-aligned frame (unit = inter-ocular distance) and that distance."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    r, l_ = xy[EYE_OUTER_R], xy[EYE_OUTER_L]
    axis = l_ - r
    iod = float(np.hypot(*axis))
    if not math.isfinite(iod) or iod < 1e-6:
        raise ValueError("degenerate landmarks: eye corners coincide")
    ex = axis / iod
    ey = np.array([-ex[1], ex[0]])  # ex rotated +90 deg: points down the face in image coordinates
    rel = xy - (r + l_) / 2.0
    return np.stack([rel @ ex, rel @ ey], axis=1) / iod, iod


def head_pose(points: np.ndarray) -> tuple[float, float, float]:
    """Yaw, pitch, roll in degrees from the eye line and the forehead-chin axis in 3-D."""
    p = np.asarray(points, dtype=np.float64)
    ex = p[EYE_OUTER_L] - p[EYE_OUTER_R]
    ex /= np.linalg.norm(ex)
    down = p[CHIN] - p[FOREHEAD]
    ey = down - (down @ ex) * ex
    ey /= np.linalg.norm(ey)
    yaw = math.degrees(math.asin(float(np.clip(ex[2], -1, 1))))
    pitch = math.degrees(math.asin(float(np.clip(ey[2], -1, 1)))) - PITCH_OFFSET_DEG
    roll = math.degrees(math.atan2(ex[1], ex[0]))
    return yaw, pitch, roll


def measure(points: np.ndarray) -> dict[str, float]:
    """All measures of one face; `points` is (478 or 468, 3) in pixels (x, y, z scaled like x)."""
    q, iod = face_frame(points)
    y = q[:, 1]
    lip_centre = (y[LIP_UP_IN] + y[LIP_LO_IN]) / 2.0
    corners = (y[MOUTH_CORNER_R] + y[MOUTH_CORNER_L]) / 2.0
    yaw, pitch, roll = head_pose(points)
    m = {
        "corner_lift": lip_centre - corners,
        "mouth_width": float(np.hypot(*(q[MOUTH_CORNER_L] - q[MOUTH_CORNER_R]))),
        "mouth_open": max(0.0, y[LIP_LO_IN] - y[LIP_UP_IN]),
        "jaw_drop": y[CHIN] - y[NOSE_TIP],
        "lip_thickness": (y[LIP_UP_IN] - y[LIP_UP_OUT]) + (y[LIP_LO_OUT] - y[LIP_LO_IN]),
        "brow_raise": -float(np.mean(y[list(BROW_R + BROW_L)])),
        "brow_gap": float(q[BROW_INNER_L, 0] - q[BROW_INNER_R, 0]),
        "brow_inner_height": -(y[BROW_INNER_R] + y[BROW_INNER_L]) / 2.0,
        "eye_open": ((y[LID_LO_R] - y[LID_UP_R]) + (y[LID_LO_L] - y[LID_UP_L])) / 2.0,
        "yaw": yaw,
        "pitch": pitch,
        "roll": roll,
    }
    return {k: float(v) for k, v in m.items()} | {"iod_px": iod}

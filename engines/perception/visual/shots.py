"""Which frames of a clip show the same face in the same shot, steadily enough to read its movements.

A cue compares frames with each other (against the clip's baseline, or over time), so every frame it uses must
show one person in one shot. Between consecutive sampled frames this module finds shot cuts (the colour
histogram changes), camera motion (phase correlation of the background, with the face masked out: it shifts,
or changes in a way no shift explains, as when the camera rolls or zooms) and where the tracked face jumps (its
box moves, beyond what the camera moved, or changes size more than a head does between samples: the largest
face is then someone else). The frames of the longest run of one face (a track) are the ones measured; faces
smaller than `min_face_px` are not read at all; head-pose readings are not used from frames where the camera
moved, since an apparent head movement then cannot be told from the camera's. Camera rotation and zoom are
detected, not measured, so head pose is not corrected for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

HIST_BINS = 8  # per RGB channel: a 512-bin joint histogram
THUMB = 4  # frames are averaged over THUMB x THUMB pixel blocks before the phase correlation
MIN_PEAK = 0.15  # a phase-correlation peak below this is no reliable shift (a cut, a blur, a rotation or zoom)
MIN_TEXTURE = 2.0  # grey levels (std of the background thumbnail): a flat background aligns with nothing
FACE_MARGIN = (0.3, 0.3, 0.3, 0.6)  # left, top, right, bottom share of the face box masked with it (neck too)
MAX_JUMP = 0.6  # a face centre moving more than this many face widths between samples is someone else
MAX_RESIZE = 1.5  # or a face box growing or shrinking by more than this factor


@dataclass
class Steps:
    """What changed between frame i and frame i + 1 (arrays of length n - 1)."""

    hist_distance: np.ndarray  # 1 - histogram intersection, 0..1
    cut: np.ndarray  # bool
    shift_px: np.ndarray  # (n - 1, 2) background shift (dx, dy) in frame pixels; 0 where unreliable
    peak: np.ndarray  # phase-correlation peak, 0..1: how well one shift explains the background's change
    camera_moving: np.ndarray  # bool: the background shifted, or changed in a way no shift explains


def _histogram(frame: np.ndarray) -> np.ndarray:
    # OpenCV's joint histogram: the same bins as a numpy bincount over value // 32 per channel, at 60 % of its cost
    h = cv2.calcHist([np.ascontiguousarray(frame)], [0, 1, 2], None, [HIST_BINS] * 3, [0, 256] * 3)
    h = h.ravel().astype(np.float64)
    return h / max(h.sum(), 1.0)


def _background(frame: np.ndarray, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """Windowed, zero-mean grey thumbnail with the face (and a margin) blanked, for phase correlation."""
    h, w = frame.shape[:2]
    hh, ww = h // THUMB, w // THUMB
    # block means by OpenCV's area resize (exact for an integer factor), then the channel mean: numpy's
    # reductions over the short axes cost five times as much for the same values
    g = cv2.resize(frame[: hh * THUMB, : ww * THUMB].astype(np.float32), (ww, hh), interpolation=cv2.INTER_AREA)
    g = g.astype(np.float64) @ np.full(3, 1 / 3)  # the channel mean, as a product: a strided mean costs 5x more
    g = g - g.mean()
    if box is not None:
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        ml, mt, mr, mb = FACE_MARGIN
        r0, r1 = max(0, int((y0 - mt * bh) / THUMB)), int((y1 + mb * bh) / THUMB) + 1
        c0, c1 = max(0, int((x0 - ml * bw) / THUMB)), int((x1 + mr * bw) / THUMB) + 1
        g[r0:r1, c0:c1] = 0.0
    return g * np.outer(np.hanning(hh), np.hanning(ww))


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, peak): how far b's content moved to become a, in thumbnail pixels."""
    f = np.fft.rfft2(a) * np.conj(np.fft.rfft2(b))
    f /= np.abs(f) + 1e-9
    r = np.fft.irfft2(f, s=a.shape)
    i, j = np.unravel_index(int(np.argmax(r)), r.shape)
    hh, ww = r.shape
    dy = i - hh if i > hh // 2 else i
    dx = j - ww if j > ww // 2 else j
    return float(dx), float(dy), float(r.max())


def frame_steps(frames: np.ndarray, boxes: list[tuple[float, float, float, float] | None],
                cut_distance: float, camera_shift_frac: float) -> Steps:
    n = len(frames)
    dist = np.zeros(max(0, n - 1))
    shift = np.zeros((max(0, n - 1), 2))
    peaks = np.ones(max(0, n - 1))
    unaligned = np.zeros(max(0, n - 1), dtype=bool)
    if n >= 2 and min(frames.shape[1], frames.shape[2]) >= 4 * THUMB:
        hists = [_histogram(f) for f in frames]
        bgs = [_background(f, b) for f, b in zip(frames, boxes, strict=True)]
        textured = [float(g.std()) >= MIN_TEXTURE for g in bgs]
        for i in range(n - 1):
            dist[i] = 1.0 - float(np.minimum(hists[i], hists[i + 1]).sum())
            dx, dy, peaks[i] = _shift(bgs[i + 1], bgs[i])
            if peaks[i] >= MIN_PEAK:
                shift[i] = (dx * THUMB, dy * THUMB)
            else:  # e.g. the camera rolled: that would read as a head tilt
                unaligned[i] = textured[i] and textured[i + 1]
    cut = dist >= cut_distance
    width = frames.shape[2] if n else 1
    moving = ~cut & ((np.hypot(shift[:, 0], shift[:, 1]) >= camera_shift_frac * width) | unaligned)
    return Steps(dist, cut, shift, peaks, moving)


def _same_face(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    wa, wb = a[2] - a[0], b[2] - b[0]
    if min(wa, wb) <= 0 or max(wa, wb) / min(wa, wb) > MAX_RESIZE:
        return False
    jump = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    return bool(jump <= MAX_JUMP * (wa + wb) / 2)


def tracks(boxes: list[tuple[float, float, float, float] | None], cut: np.ndarray) -> np.ndarray:
    """Track number per frame (-1 where no usable face): a new track starts after a shot cut or a face jump.
    Frames without a face in between do not break a track; a cut anywhere between two faces does."""
    out = np.full(len(boxes), -1, dtype=np.int64)
    last: int | None = None
    track = -1
    for i, b in enumerate(boxes):
        if b is None:
            continue
        if last is None or bool(cut[last:i].any()) or not _same_face(boxes[last], b):  # type: ignore[arg-type]
            track += 1
        out[i] = track
        last = i
    return out


def main_track(track_ids: np.ndarray) -> np.ndarray:
    """Mask of the frames of the longest track (the earliest of equally long ones)."""
    ids = track_ids[track_ids >= 0]
    if not ids.size:
        return np.zeros(len(track_ids), dtype=bool)
    counts = np.bincount(ids)
    return track_ids == int(np.argmax(counts))

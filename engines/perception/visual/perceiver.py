"""The lite video cue front end: frames -> largest face -> measures + FER expression -> visual cues.

Only the frames of one face in one shot are measured (shots.py: shot cuts, a jump to another face, faces too
small to read; head pose is not read while the camera moves); opposite cues are then resolved and the strongest
`lite.max_visual_cues` kept (engines/perception/resolve.py). `per_frame` says, per frame, what was measured.

`VisualPerceiver(settings.lite).perceive(frames, times)` is what the lite pipeline's visual stage calls;
`perceive_batch` serves the dynamic batcher (face meshes run per frame, FER crops of all clips run as one batch).
Thread-safe: MediaPipe graphs come from a pool, ONNX Runtime sessions allow concurrent runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.errors import BadRequest
from engines.perception.resolve import cap_by_strength, resolve_opposites
from engines.perception.visual import cues as cue_rules
from engines.perception.visual import geometry, shots
from engines.perception.visual.face import FaceMesher, FrameFace
from engines.perception.visual.fer import FER_LABELS, FerClassifier, face_crops
from engines.types import Cue
from xemo.settings import LiteSettings

MAX_FRAMES = 1024  # a clip's frames are capped by ingest long before this; guards direct callers
POSE = ("yaw", "pitch", "roll")


@dataclass
class VisualResult:
    face_found: bool
    faces_per_frame: list[int]  # faces found per frame (the mesh looks for up to 3; the largest is measured)
    cues: list[Cue]  # modality "visual"
    expression: dict[str, float]  # mean FER probabilities over frames with a face; {} without a face or FER
    per_frame: list[dict[str, Any]] = field(default_factory=list)  # time, face count, measures, FER per frame
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"face_found": self.face_found, "faces_per_frame": self.faces_per_frame,
                "cues": [c.to_dict() for c in self.cues], "expression": self.expression,
                "per_frame": self.per_frame, "summary": self.summary}


def _check(frames: Any, times: Any) -> tuple[np.ndarray, list[float]]:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise BadRequest(f"visual perception needs RGB uint8 frames shaped (N, H, W, 3), got {shape}")
    n = len(frames)
    if n > MAX_FRAMES:
        raise BadRequest(f"too many frames for visual perception: {n} > {MAX_FRAMES}")
    if n and min(frames.shape[1], frames.shape[2]) < 8:
        raise BadRequest(f"frames of {frames.shape[2]}x{frames.shape[1]} pixels are too small to hold a face")
    try:
        ts = [float(t) for t in times]
    except (TypeError, ValueError):
        raise BadRequest("frame times must be numbers") from None
    if len(ts) != n:
        raise BadRequest(f"got {n} frames but {len(ts)} frame times")
    if any(not math.isfinite(t) for t in ts) or any(b < a for a, b in zip(ts, ts[1:], strict=False)):
        raise BadRequest("frame times must be finite and non-decreasing")
    return frames, ts


class VisualPerceiver:
    def __init__(self, settings: LiteSettings) -> None:
        self.settings = settings
        self.mesher = FaceMesher(pool_size=settings.face_mesh_threads)
        self.fer: FerClassifier | None = None
        if settings.use_fer:
            # One thread: a batch of 64x64 crops takes milliseconds, and the stage runs beside the audio one
            # (16 crops: 11-19 ms with 1 thread vs 16-23 ms with 2 on the shared 2-core machine).
            self.fer = FerClassifier(runtime=settings.fer_runtime, cache_dir=settings.cache_dir, n_threads=1)

    @property
    def fer_runtime(self) -> str | None:
        return self.fer.runtime if self.fer else None

    def perceive(self, frames: np.ndarray, times: list[float]) -> VisualResult:
        return self.perceive_batch([(frames, times)])[0]

    def perceive_batch(self, items: list[tuple[np.ndarray, list[float]]]) -> list[VisualResult]:
        checked = [_check(f, t) for f, t in items]
        faces = [self.mesher.detect(f) for f, _ in checked]
        probs = self._expressions(checked, faces)
        return [self._result(fr, ts, ff, p) for (fr, ts), ff, p in zip(checked, faces, probs, strict=True)]

    def _expressions(self, checked: list[tuple[np.ndarray, list[float]]],
                     faces: list[list[FrameFace]]) -> list[np.ndarray | None]:
        """FER probabilities per frame (NaN rows without a face), one classifier call for every clip."""
        if self.fer is None:
            return [None] * len(checked)
        imgs, boxes, where = [], [], []
        for ci, ((frames, _), ff) in enumerate(zip(checked, faces, strict=True)):
            for fi, f in enumerate(ff):
                if f.box is not None:
                    imgs.append(frames[fi])
                    boxes.append(f.box)
                    where.append((ci, fi))
        out = [np.full((len(ff), len(FER_LABELS)), np.nan, dtype=np.float32) for ff in faces]
        if imgs:
            p = self.fer.predict(face_crops(imgs, boxes))
            for (ci, fi), row in zip(where, p, strict=True):
                out[ci][fi] = row
        return out

    def _result(self, frames: np.ndarray, times: list[float], ff: list[FrameFace],
                probs: np.ndarray | None) -> VisualResult:
        st = self.settings
        rows: list[dict[str, float] | None] = []
        for f in ff:
            try:
                rows.append(geometry.measure(f.landmarks) if f.landmarks is not None else None)
            except ValueError:  # degenerate mesh (eye corners coincide): treat as no usable face
                rows.append(None)
        counts = [f.n_faces for f in ff]
        small = [r is not None and f.box is not None and f.box[2] - f.box[0] < st.min_face_px
                 for r, f in zip(rows, ff, strict=True)]
        usable = [f.box if r is not None and not sm else None for r, f, sm in zip(rows, ff, small, strict=True)]
        steps = shots.frame_steps(frames, [f.box for f in ff], st.shot_cut_distance, st.camera_shift_frac)
        track = shots.tracks(usable, steps.cut)
        main = shots.main_track(track)
        moving = np.zeros(len(times), dtype=bool)
        moving[:-1] |= steps.camera_moving
        moving[1:] |= steps.camera_moving
        used: list[dict[str, float] | None] = []
        for i, r in enumerate(rows):
            if r is None or not main[i]:
                used.append(None)
            elif moving[i]:  # expression measures hold; the head pose may be the camera's
                used.append({**r, **{k: math.nan for k in POSE}})
            else:
                used.append(r)
        n_seen = sum(r is not None for r in rows)
        n_face = sum(r is not None for r in used)
        per_frame: list[dict[str, Any]] = []
        for i, (t, r) in enumerate(zip(times, rows, strict=True)):
            d: dict[str, Any] = {"t": round(t, 3), "faces": counts[i]}
            if i and steps.cut[i - 1]:
                d["shot_cut_before"] = True
            if moving[i]:
                d["camera_moving"] = True
            if r is not None:
                d.update({k: round(v, 4) for k, v in r.items()})
                d["track"] = int(track[i])
                d["measured"] = bool(main[i])
                if small[i]:
                    d["too_small"] = True
                if probs is not None:
                    d["fer"] = {lb: round(float(p), 4) for lb, p in zip(FER_LABELS, probs[i], strict=True)}
            per_frame.append(d)
        if n_seen == 0:
            what = "no frames" if not times else f"no face seen in {len(times)} frames"
            return VisualResult(False, counts, [], {}, per_frame, what)
        if n_face == 0:
            what = f"a face seen in {n_seen}/{len(times)} frames, too small to read (under {st.min_face_px} px wide)"
            return VisualResult(True, counts, [], {}, per_frame, what)
        expression: dict[str, float] = {}
        if probs is not None:
            mask = np.array([r is not None for r in used])
            mean = np.nanmean(probs[mask], axis=0)
            expression = {lb: round(float(p), 4) for lb, p in zip(FER_LABELS, mean, strict=True)}
        cues = cue_rules.clip_cues(times, used, probs)
        cues = cap_by_strength(resolve_opposites(cues), {"visual": st.max_visual_cues})
        summary = f"face seen in {n_seen}/{len(times)} frames"
        if n_face < n_seen:
            summary += f", {n_face} of them in one shot with one face measured"
        n_cuts, n_moving = int(steps.cut.sum()), int(moving.sum())
        if n_cuts:
            summary += f"; {n_cuts} shot cut{'s' if n_cuts > 1 else ''}"
        if n_moving:
            summary += f"; camera moving in {n_moving} frames (head pose not read there)"
        if max(counts) > 1:
            summary += f" (up to {max(counts)} faces; the largest is described)"
        if expression:
            top = max(expression, key=expression.__getitem__)
            summary += f"; expression mostly {top} ({expression[top]:.2f})"
        return VisualResult(True, counts, cues, expression, per_frame, summary)

    def close(self) -> None:
        self.mesher.close()

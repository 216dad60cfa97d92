"""Face detection + 478-point face mesh with the models bundled in mediapipe 0.10.21 (no download).

Uses the legacy `mp.solutions.face_mesh` graph (short-range BlazeFace detector + attention mesh with irises) in
static-image mode, so every frame is independent and one clip never leaks tracking state into the next.
A MediaPipe graph must not be entered by two threads at once, so graphs live in a small pool; one clip's frames
are split over the graphs that are free at that moment (MediaPipe releases the GIL: two graphs meshed a dev clip's
timeline 1.7x as fast as one), which never waits for a graph held by another request.
Its log line "Using NORM_RECT without IMAGE_DIMENSIONS is only supported for the square ROI" is harmless here:
on 672x378 frames the landmarks match those of the same frame padded to a square within 0.5 px on average.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from engines.errors import ModelError

MIN_SHARE = 4  # frames per graph at least: a clip of a few frames stays on one graph, without a thread hand-off


@dataclass
class FrameFace:
    """The largest face of one frame: landmarks in pixels (x, y, z scaled like x) and its box."""

    n_faces: int
    landmarks: np.ndarray | None  # (478, 3) float32
    box: tuple[float, float, float, float] | None  # x0, y0, x1, y1


class FaceMesher:
    def __init__(self, max_faces: int = 3, pool_size: int = 2, min_confidence: float = 0.5) -> None:
        try:
            import mediapipe as mp
        except ImportError as e:
            raise ModelError(f"mediapipe is not installed ({e})") from None
        self._mp = mp
        self._max_faces = max_faces
        self._min_conf = min_confidence
        self._pool: queue.Queue = queue.Queue()
        self._created = 0
        self._cap = max(1, pool_size)
        self._lock = threading.Lock()
        self._pool.put(self._new_graph())  # fail at load time, not on the first request
        self._helpers = ThreadPoolExecutor(self._cap - 1, "xemo-face-mesh") if self._cap > 1 else None

    def _new_graph(self):  # -> mp.solutions.face_mesh.FaceMesh
        self._created += 1
        return self._mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=self._max_faces, refine_landmarks=True,
            min_detection_confidence=self._min_conf,
        )

    def _acquire(self):  # a free graph, a new one while under the cap, else wait for one
        g = self._spare()
        return g if g is not None else self._pool.get()

    def _spare(self):  # a graph that can be had without waiting, or None
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            with self._lock:
                if self._created < self._cap:
                    return self._new_graph()
            return None

    def detect(self, frames: list[np.ndarray] | np.ndarray) -> list[FrameFace]:
        """Faces of each RGB uint8 frame, in order. One graph is waited for; others free now take a share."""
        graphs = [self._acquire()]
        try:
            while self._helpers is not None and len(graphs) < min(self._cap, len(frames) // MIN_SHARE):
                g = self._spare()
                if g is None:
                    break
                graphs.append(g)
            bounds = np.linspace(0, len(frames), len(graphs) + 1).round().astype(int)
            shares = [frames[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            if len(graphs) == 1:
                return [self._one(graphs[0], f) for f in frames]
            assert self._helpers is not None
            futures = [self._helpers.submit(lambda g, sh: [self._one(g, f) for f in sh], g, sh)
                       for g, sh in zip(graphs[1:], shares[1:], strict=True)]
            first = [self._one(graphs[0], f) for f in shares[0]]
            return first + [face for fut in futures for face in fut.result()]
        finally:
            for g in graphs:
                self._pool.put(g)

    @staticmethod
    def _one(graph, frame: np.ndarray) -> FrameFace:
        h, w = frame.shape[:2]
        res = graph.process(np.ascontiguousarray(frame))
        faces = res.multi_face_landmarks or []
        if not faces:
            return FrameFace(0, None, None)
        best, best_area, best_box = None, -1.0, None
        for face in faces:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float32)
            x0, y0 = pts[:, :2].min(axis=0)
            x1, y1 = pts[:, :2].max(axis=0)
            area = float((x1 - x0) * (y1 - y0))
            if area > best_area:
                best, best_area, best_box = pts, area, (float(x0), float(y0), float(x1), float(y1))
        return FrameFace(len(faces), best, best_box)

    def close(self) -> None:
        if self._helpers is not None:
            self._helpers.shutdown(wait=True)
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

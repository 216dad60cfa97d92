"""Which frames to keep: N uniform over the whole clip (the paper's sampling) and a capped-fps timeline.

Sampling is by presentation time, not by frame index, so variable frame rate clips are sampled evenly in time.
For constant frame rate it picks the same frames as the authors' `np.linspace(0, n - 1, N).astype(int)`.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-6  # seconds; absorbs float error in pts * time_base


def pick(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each target time: the last frame starting at or before it."""
    idx = np.searchsorted(times, targets + _EPS, side="right") - 1
    return np.clip(idx, 0, len(times) - 1)


def uniform_indices(times: np.ndarray, n: int) -> np.ndarray:
    """n frames evenly spread from the first to the last frame (times sorted ascending)."""
    if len(times) == 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    return pick(times, np.linspace(times[0], times[-1], n))


def timeline_indices(times: np.ndarray, fps: float, budget: int) -> np.ndarray:
    """Frames at most `fps` per second (centred in equal slots over the clip), at most `budget` of them."""
    if len(times) == 0 or fps <= 0 or budget <= 0:
        return np.zeros(0, dtype=np.int64)
    span = float(times[-1] - times[0])
    count = min(int(span * fps), budget, len(times))
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    slots = times[0] + (np.arange(count) + 0.5) * span / count
    return np.unique(pick(times, slots))


def output_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Downscaled (width, height) with the long side <= long_side, aspect kept, even sizes, never upscaled."""
    scale = min(1.0, long_side / max(width, height))
    if scale >= 1.0:
        return width, height
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)

"""Prosodic tracks and measures over the speech parts: pitch (librosa pyin), loudness, speaking rate, pauses.

Everything runs on a 20 ms frame grid. pyin is the slow part, so it only sees the VAD's speech segments and
uses a 0.2-semitone pitch grid (its Viterbi cost grows with the square of the number of pitch bins; 0.2 st
keeps the median F0 within a bin of the 0.1 st default at a quarter of the cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SR = 16000
HOP = 320  # 20 ms
FRAME = 640  # 40 ms RMS window
PYIN_FRAME = 1024  # 64 ms: two periods of the lowest pitch
FMIN, FMAX = 55.0, 550.0
PYIN_RESOLUTION = 0.2
SILENCE_DB = -60.0


@dataclass
class Tracks:
    """Per-frame measurements; frame i is centred at i * hop_s."""

    hop_s: float
    level_db: np.ndarray  # RMS level in dBFS
    f0: np.ndarray  # Hz, NaN where unvoiced or outside speech
    voiced: np.ndarray  # bool
    speech: np.ndarray  # bool: inside a VAD segment

    @property
    def n(self) -> int:
        return len(self.level_db)


def n_frames(n_samples: int) -> int:
    return 1 + n_samples // HOP


def frame_levels(x: np.ndarray) -> np.ndarray:
    """Centred RMS level per frame in dBFS (floored at SILENCE_DB)."""
    pad = FRAME // 2
    xp = np.pad(x, (pad, pad))
    n = n_frames(len(x))
    sq = np.concatenate([[0.0], np.cumsum(xp.astype(np.float64) ** 2)])
    starts = np.arange(n) * HOP
    ends = np.minimum(starts + FRAME, len(xp))
    power = (sq[ends] - sq[starts]) / FRAME
    return np.maximum(10 * np.log10(power + 1e-12), SILENCE_DB)


def speech_mask(segments: list[tuple[float, float]], n: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    hop_s = HOP / SR
    for s, e in segments:
        mask[int(np.floor(s / hop_s)) : int(np.ceil(e / hop_s)) + 1] = True
    return mask


def pitch_track(x: np.ndarray, segments: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """pyin F0 on the speech segments only, concatenated on the hop grid, mapped back to clip frames."""
    import librosa

    n = n_frames(len(x))
    f0 = np.full(n, np.nan)
    voiced = np.zeros(n, bool)
    pieces, spans = [], []
    for s, e in segments:
        a = int(np.floor(s * SR / HOP))
        b = min(n, int(np.ceil(e * SR / HOP)))
        if b - a < 3:
            continue
        pieces.append(x[a * HOP : b * HOP])
        spans.append((a, b))
    if not pieces:
        return f0, voiced
    y = np.concatenate(pieces)
    if len(y) < PYIN_FRAME:
        y = np.pad(y, (0, PYIN_FRAME - len(y)))
    pf0, pvoiced, _ = librosa.pyin(
        y, sr=SR, fmin=FMIN, fmax=FMAX, frame_length=PYIN_FRAME, hop_length=HOP, resolution=PYIN_RESOLUTION
    )
    k = 0
    for a, b in spans:
        m = min(b - a, len(pf0) - k)
        f0[a : a + m] = pf0[k : k + m]
        voiced[a : a + m] = pvoiced[k : k + m]
        k += b - a
    voiced &= np.isfinite(f0)
    f0[~voiced] = np.nan
    return f0, voiced


def warm_up() -> None:
    """Compile pyin's numba kernels now (about 5 s on the first process) instead of on the first request."""
    t = np.arange(SR // 2) / SR
    tone = (0.3 * np.sin(2 * np.pi * 140 * t) + 0.1 * np.sin(2 * np.pi * 280 * t)).astype(np.float32)
    pitch_track(tone, [(0.0, 0.5)])


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of a boolean array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def fine_levels(x: np.ndarray, hop: int = 160, win: int = 320) -> np.ndarray:
    """Centred RMS level in dB on a 10 ms grid, smoothed over 50 ms (for syllable and burst peaks)."""
    pad = win // 2
    xp = np.pad(x, (pad, pad))
    n = 1 + len(x) // hop
    sq = np.concatenate([[0.0], np.cumsum(xp.astype(np.float64) ** 2)])
    starts = np.arange(n) * hop
    lv = 10 * np.log10((sq[np.minimum(starts + win, len(xp))] - sq[starts]) / win + 1e-12)
    return np.convolve(lv, np.ones(5) / 5, mode="same")


def syllable_nuclei(x: np.ndarray, segments: list[tuple[float, float]]) -> np.ndarray:
    """Times (s) of syllable nuclei: level peaks >= 80 ms apart standing >= 2 dB above the dips around them,
    inside speech and within 25 dB of the loud speech (after de Jong & Wempe's intensity-peak method; it
    counts 19-22 of the 20 syllables of the espeak test sentence at any speed)."""
    from scipy.signal import find_peaks

    lv = fine_levels(x)
    mask = np.zeros(len(lv), bool)
    for s, e in segments:
        mask[int(s * 100) : int(np.ceil(e * 100)) + 1] = True
    if not mask.any():
        return np.zeros(0)
    peaks, _ = find_peaks(lv, prominence=2.0, distance=8)
    floor = np.percentile(lv[mask], 95) - 25
    peaks = peaks[mask[peaks] & (lv[peaks] > floor)]
    return peaks * 0.01


def semitones(f: np.ndarray, ref: float = 1.0) -> np.ndarray:
    return 12 * np.log2(f / ref)


def prosody_features(
    x: np.ndarray, tr: Tracks, segments: list[tuple[float, float]], duration_s: float
) -> dict[str, float]:
    """Clip-level functionals of the speech frames (eGeMAPS-style names where one fits)."""
    feats: dict[str, float] = {}
    speech_s = float(sum(e - s for s, e in segments))
    feats["speech_s"] = speech_s
    feats["speech_ratio"] = speech_s / duration_s if duration_s > 0 else 0.0
    lv = tr.level_db[tr.speech]
    if lv.size:
        feats["loudness_db"] = float(10 * np.log10(np.mean(10 ** (lv / 10))))  # equivalent level
        feats["loudness_p20_db"], feats["loudness_p80_db"] = (float(v) for v in np.percentile(lv, [20, 80]))
        feats["loudness_range_db"] = feats["loudness_p80_db"] - feats["loudness_p20_db"]
    f = tr.f0[tr.voiced]
    feats["voiced_ratio"] = float(tr.voiced[tr.speech].mean()) if tr.speech.any() else 0.0
    if f.size >= 5:
        st = semitones(f, 27.5)
        feats["f0_median_hz"] = float(np.median(f))
        feats["f0_p10_hz"], feats["f0_p90_hz"] = (float(v) for v in np.percentile(f, [10, 90]))
        feats["f0_range_st"] = float(np.percentile(st, 90) - np.percentile(st, 10))
        feats["f0_sd_st"] = float(np.std(st))
    nuclei = syllable_nuclei(x, segments)
    feats["syllables"] = float(len(nuclei))
    feats["syllable_rate"] = len(nuclei) / speech_s if speech_s > 0 else 0.0
    voiced_runs = [r for r in runs(tr.voiced) if r[1] - r[0] >= 2]
    feats["voiced_segments_per_s"] = len(voiced_runs) / speech_s if speech_s > 0 else 0.0
    pauses = [b[0] - a[1] for a, b in zip(segments, segments[1:], strict=False)]
    feats["pauses"] = float(sum(p >= 0.3 for p in pauses))
    feats["max_pause_s"] = float(max(pauses, default=0.0))
    span = segments[-1][1] - segments[0][0] if segments else 0.0
    feats["pause_ratio"] = float(sum(p for p in pauses if p >= 0.3) / span) if span > 0 else 0.0
    return feats

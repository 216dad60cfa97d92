"""Optional Praat measures through parselmouth (GPLv3, `research` extra): pitch, jitter, shimmer, HNR.

Used only when `settings.lite.audio_backend == "parselmouth"`; never imported otherwise. It replaces the
librosa/numpy approximations of the clip-level measures with Praat's own, over the speech segments.
"""

from __future__ import annotations

import numpy as np

from engines.errors import ModelError

PITCH_FLOOR, PITCH_CEILING = 75.0, 600.0


def parselmouth_measures(x: np.ndarray, sr: int, segments: list[tuple[float, float]]) -> dict[str, float]:
    try:
        import parselmouth
        from parselmouth.praat import call
    except ImportError:
        raise ModelError("audio_backend=parselmouth needs the `research` extra (praat-parselmouth)") from None
    speech = np.concatenate([x[int(s * sr) : int(e * sr)] for s, e in segments]) if segments else x
    if len(speech) < sr // 10:
        return {}
    snd = parselmouth.Sound(speech.astype(np.float64), sampling_frequency=sr)
    out: dict[str, float] = {}
    f0 = snd.to_pitch(0.01, PITCH_FLOOR, PITCH_CEILING).selected_array["frequency"]
    f0 = f0[f0 > 0]
    if f0.size >= 5:
        st = 12 * np.log2(f0 / 27.5)
        out["f0_median_hz"] = float(np.median(f0))
        out["f0_p10_hz"], out["f0_p90_hz"] = (float(v) for v in np.percentile(f0, [10, 90]))
        out["f0_range_st"] = float(np.percentile(st, 90) - np.percentile(st, 10))
        out["f0_sd_st"] = float(np.std(st))
    points = call(snd, "To PointProcess (periodic, cc)", PITCH_FLOOR, PITCH_CEILING)
    jitter = call(points, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3)
    shimmer = call([snd, points], "Get shimmer (local)", 0, 0, 0.0001, 0.02, 1.3, 1.6)
    shimmer_db = call([snd, points], "Get shimmer (local_dB)", 0, 0, 0.0001, 0.02, 1.3, 1.6)
    for key, v in (("jitter_pct", 100 * jitter), ("shimmer_pct", 100 * shimmer), ("shimmer_db", shimmer_db)):
        if np.isfinite(v):
            out[key] = float(v)
    hnr = snd.to_harmonicity_cc(0.01, PITCH_FLOOR, 0.1, 1.0).values
    hnr = hnr[hnr > -200]
    if hnr.size:
        out["hnr_db"] = float(np.mean(hnr))
    return out

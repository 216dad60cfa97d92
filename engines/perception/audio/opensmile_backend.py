"""Optional openSMILE eGeMAPSv02 functionals (`research` extra; audEERING research licence, non-commercial).

Used only when `settings.lite.audio_backend == "opensmile"`; never imported otherwise. It replaces the
clip-level pitch and voice-quality measures with eGeMAPS's, computed over the speech segments, mapped onto the
feature names the cue rules read (F0 ranges are eGeMAPS's 20th-80th percentiles, not 10th-90th).
"""

from __future__ import annotations

import numpy as np

from engines.errors import ModelError

# eGeMAPSv02 functional -> (our feature name, conversion)
_MAP = {
    "jitterLocal_sma3nz_amean": ("jitter_pct", lambda v: 100 * v),
    "shimmerLocaldB_sma3nz_amean": ("shimmer_db", float),
    "HNRdBACF_sma3nz_amean": ("hnr_db", float),
    "alphaRatioV_sma3nz_amean": ("alpha_ratio_db", float),
    "hammarbergIndexV_sma3nz_amean": ("hammarberg_db", float),
    "VoicedSegmentsPerSec": ("voiced_segments_per_s", float),
    "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2": ("f0_range_st", float),
    "F0semitoneFrom27.5Hz_sma3nz_percentile50.0": ("f0_median_hz", lambda v: 27.5 * 2 ** (v / 12)),
}


class OpenSmileBackend:
    def __init__(self) -> None:
        try:
            import opensmile
        except ImportError:
            raise ModelError("audio_backend=opensmile needs the `research` extra (opensmile)") from None
        self.smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
        )

    def __call__(self, x: np.ndarray, sr: int, segments: list[tuple[float, float]]) -> dict[str, float]:
        speech = np.concatenate([x[int(s * sr) : int(e * sr)] for s, e in segments]) if segments else x
        if len(speech) < sr // 10:
            return {}
        row = self.smile.process_signal(speech, sr).iloc[0]
        out: dict[str, float] = {}
        for col, (name, conv) in _MAP.items():
            if col in row.index and np.isfinite(row[col]) and (row[col] != 0 or name != "f0_median_hz"):
                out[name] = float(conv(float(row[col])))
        return out

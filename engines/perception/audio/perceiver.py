"""The lite audio front end (the lite AECB): speech detection, prosody and voice quality turned into cues."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engines.errors import BadRequest, MediaError
from engines.perception.audio import prosody
from engines.perception.audio.cues import vocal_cues
from engines.perception.audio.jit_lock import compile_lock
from engines.perception.audio.laughter import LAUGHTER, laughter_bursts
from engines.perception.audio.laughter import warm_up as laughter_warm_up
from engines.perception.audio.vad import SileroVad, gain_db
from engines.perception.audio.voice_quality import voice_quality_features
from engines.perception.resolve import cap_by_strength, resolve_opposites
from engines.types import Cue
from xemo.settings import LiteSettings

MIN_SECONDS = 0.1  # shorter audio cannot hold a word
SILENT_DBFS = -70.0  # peak-free digital silence: skip the models entirely


@dataclass
class AudioResult:
    speech_found: bool
    speech_segments: list[tuple[float, float]] = field(default_factory=list)
    cues: list[Cue] = field(default_factory=list)
    features: dict[str, float] = field(default_factory=dict)
    summary: str = "no audio"
    # "vad": segments found by the detector; "transcript": the detector heard none but the transcript has words,
    # so speech is taken as present and too soft to measure (no segments, no vocal cues); see reconcile.py.
    speech_source: str = "vad"


class AudioPerceiver:
    """Loads silero-vad (ONNX Runtime) and warms up pyin once; `perceive` is thread-safe."""

    def __init__(self, settings: LiteSettings) -> None:
        self.settings = settings
        self.vad = SileroVad(threads=1)
        self.backend = _load_backend(settings.audio_backend)
        with compile_lock():  # every numba kernel a request uses (pyin; the mel spectrogram of laughter)
            prosody.warm_up()
            laughter_warm_up()

    def perceive_batch(self, items: list[tuple[np.ndarray | None, int]]) -> list[AudioResult]:
        # Each clip is a handful of small numpy/ORT calls; batching across clips would not save work.
        return [self.perceive(audio, sr) for audio, sr in items]

    def perceive(self, audio: np.ndarray | None, sample_rate: int) -> AudioResult:
        if audio is None:
            return AudioResult(False, summary="no audio track")
        x = _prepare(audio, sample_rate)
        duration = len(x) / prosody.SR
        if duration < MIN_SECONDS or _peak_dbfs(x) < SILENT_DBFS:
            return AudioResult(False, features={"duration_s": round(duration, 3)}, summary="silence: no speech")
        segments = self.vad.segments(x)
        if not segments:
            return AudioResult(
                False, features={"duration_s": round(duration, 3), "vad_gain_db": round(gain_db(x), 2)},
                summary="no speech detected in the audio",
            )

        f0, voiced = prosody.pitch_track(x, segments)
        levels = prosody.frame_levels(x)
        tr = prosody.Tracks(prosody.HOP / prosody.SR, levels, f0, voiced, prosody.speech_mask(segments, len(levels)))
        feats = {"duration_s": duration, **prosody.prosody_features(x, tr, segments, duration)}
        feats.update(voice_quality_features(x, tr))
        if self.backend is not None:
            feats.update(self.backend(x, prosody.SR, segments))
        cues = vocal_cues(feats, tr, segments)
        for s, e, n, sim in laughter_bursts(x, tr.voiced):
            cues.append(
                Cue(
                    "auditory",
                    LAUGHTER,
                    s,
                    e,
                    round(min(1.0, 0.3 + 0.1 * n), 3),
                    {"bursts": n, "spectral_similarity": sim},
                )
            )
        feats["laughter_bursts"] = float(sum(1 for c in cues if c.text == LAUGHTER))
        feats["vad_gain_db"] = gain_db(x)
        cues = cap_by_strength(resolve_opposites(cues), {"auditory": self.settings.max_auditory_cues})
        for c in cues:  # frame grids overhang the last sample: clamp, then floor to 10 ms
            c.start = float(np.floor(min(max(c.start or 0.0, 0.0), duration) * 100) / 100)
            c.end = float(np.floor(min(max(c.end or 0.0, 0.0), duration) * 100) / 100)
        feats = {k: round(float(v), 4) for k, v in feats.items()}
        return AudioResult(True, segments, cues, feats, _summary(segments, cues))


def _prepare(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Validate and bring to 16 kHz mono float32; bad input raises a typed error, never crashes later."""
    if not isinstance(audio, np.ndarray):
        raise BadRequest("audio must be a numpy array of samples")
    if not isinstance(sample_rate, int | np.integer) or not 4000 <= int(sample_rate) <= 384000:
        raise BadRequest(f"unsupported audio sample rate: {sample_rate!r} (expected 4000-384000 Hz)")
    x = audio
    if x.ndim == 2 and min(x.shape) <= 8:  # (samples, channels) or (channels, samples): mix down
        x = x.mean(axis=0 if x.shape[0] <= 8 and x.shape[0] < x.shape[1] else 1)
    if x.ndim != 1:
        raise BadRequest(f"audio must be mono (1-D); got shape {tuple(audio.shape)}")
    if x.dtype.kind not in "fiu":
        raise BadRequest(f"audio samples must be numeric, not {x.dtype}")
    if x.dtype.kind in "iu":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise MediaError("audio contains NaN or infinite samples")
    if int(sample_rate) != prosody.SR and len(x):
        import librosa

        x = librosa.resample(x, orig_sr=int(sample_rate), target_sr=prosody.SR, res_type="soxr_hq")
    peak = float(np.abs(x).max()) if len(x) else 0.0
    if peak > 1.0:  # float audio outside [-1, 1]: the levels are meaningless in dBFS, so rescale
        x = x / peak
    return np.ascontiguousarray(x, np.float32)


def _peak_dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.abs(x).max() + 1e-12)) if len(x) else -200.0


def _summary(segments: list[tuple[float, float]], cues: list[Cue]) -> str:
    speech = sum(e - s for s, e in segments)
    head = f"speech {speech:.1f} s in {len(segments)} segment{'s' if len(segments) != 1 else ''}"
    if not cues:
        return head + "; an unremarkable voice"
    top = sorted(cues, key=lambda c: -c.strength)[:4]
    return head + "; " + ", ".join(c.text for c in top)


def _load_backend(name: str):
    """Optional research backends (non-permissive licences); imported only when configured."""
    if name == "librosa":
        return None
    if name == "opensmile":
        from engines.perception.audio.opensmile_backend import OpenSmileBackend

        return OpenSmileBackend()
    if name == "parselmouth":
        from engines.perception.audio.parselmouth_backend import parselmouth_measures

        return parselmouth_measures
    raise BadRequest(f"unknown audio backend: {name}")

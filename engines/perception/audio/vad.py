"""Speech/silence segmentation with silero-vad's bundled ONNX model, run by ONNX Runtime without torch.

The silero-vad wheel ships `silero_vad_16k_sequence.onnx`, which scores every 32 ms window of a clip in one
session call (same probabilities as the streaming model, about 2x faster). We locate the file without importing
the `silero_vad` package (its `__init__` imports torch) and never use `silero_vad.read_audio` (torchcodec trap).

The model hears level: a whispered sentence at -45 dBFS peak scores below 0.2 although the same audio brought
to -6 dBFS scores 1.0. So the detector scores a copy of the audio whose near-peak level is raised to
TARGET_PEAK (never lowered, by at most MAX_GAIN_DB); on white, pink or mains-hum noise and on a steady tone,
raised the same way, it still finds no speech (checked at -50 dBFS). Loudness cues are measured on the audio as
it came, not on this copy.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import ModelError

SAMPLE_RATE = 16000
WINDOW = 512  # samples scored per step at 16 kHz
CONTEXT = 64  # samples of the previous window the model sees
TARGET_PEAK = 0.5  # -6 dBFS
MAX_GAIN_DB = 40.0
PEAK_PERCENTILE = 99.9  # near-peak level: one click does not set the gain


@dataclass(frozen=True)
class VadParams:
    """The segmentation rules of silero's `get_speech_timestamps` (same defaults)."""

    threshold: float = 0.5
    neg_threshold: float = 0.35  # once in speech, stay until the probability drops below this
    min_speech_s: float = 0.25
    min_silence_s: float = 0.1
    pad_s: float = 0.03


def model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("silero-vad is not installed; install the `silero-vad` package")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad_16k_sequence.onnx"
    if not path.is_file():
        raise ModelError("the silero-vad package lacks its bundled sequence ONNX model")
    return path


class SileroVad:
    """Loads the ONNX model once; `probabilities` and `segments` are thread-safe (ORT sessions are)."""

    def __init__(self, threads: int = 1, params: VadParams | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # the file carries unused initialisers that ORT warns about
        self.session = ort.InferenceSession(str(model_path()), opts, providers=["CPUExecutionProvider"])
        self.params = params or VadParams()

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability per 512-sample window of 16 kHz mono float32 audio."""
        n = -(-len(audio) // WINDOW)
        if n == 0:
            return np.zeros(0, np.float32)
        padded = np.zeros(n * WINDOW + CONTEXT, np.float32)
        padded[CONTEXT : CONTEXT + len(audio)] = audio
        frames = np.lib.stride_tricks.sliding_window_view(padded, WINDOW + CONTEXT)[::WINDOW][:n]
        zeros = np.zeros((1, 1, 128), np.float32)
        (probs, _, _) = self.session.run(None, {"input": np.ascontiguousarray(frames), "h": zeros, "c": zeros})
        return np.asarray(probs, np.float32).reshape(-1)

    def segments(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """Speech segments in seconds, clipped to the audio (scored at a normalised level, see `gain_db`)."""
        g = gain_db(audio)
        x = audio if g == 0.0 else audio * np.float32(10 ** (g / 20))
        return probs_to_segments(self.probabilities(x), len(audio) / SAMPLE_RATE, self.params)


def gain_db(audio: np.ndarray) -> float:
    """The gain (dB, 0..MAX_GAIN_DB) that brings the audio's near-peak level to TARGET_PEAK for detection."""
    if not len(audio):
        return 0.0
    peak = float(np.percentile(np.abs(audio), PEAK_PERCENTILE))
    if peak <= 0.0:
        return 0.0
    return float(np.clip(20 * np.log10(TARGET_PEAK / peak), 0.0, MAX_GAIN_DB))


def probs_to_segments(probs: np.ndarray, duration_s: float, p: VadParams) -> list[tuple[float, float]]:
    """silero's `get_speech_timestamps` rules (no max-length split): speech starts at a window >= threshold and
    ends once the probability has stayed off it for min_silence after first dropping below neg_threshold; short
    speech is dropped; segments are padded, and a gap shorter than two pads is shared between its neighbours."""
    step = WINDOW / SAMPLE_RATE
    raw: list[list[float]] = []
    start: float | None = None
    temp_end: float | None = None
    for i, prob in enumerate(probs):
        t = i * step
        if prob >= p.threshold:
            temp_end = None
            if start is None:
                start = t
                continue
        if start is not None and prob < p.neg_threshold:
            if temp_end is None:
                temp_end = t
            if t - temp_end >= p.min_silence_s:
                if temp_end - start > p.min_speech_s:
                    raw.append([start, temp_end])
                start, temp_end = None, None
    if start is not None and duration_s - start > p.min_speech_s:
        raw.append([start, duration_s])

    for i, seg in enumerate(raw):
        if i == 0:
            seg[0] = max(0.0, seg[0] - p.pad_s)
        if i + 1 < len(raw):
            gap = raw[i + 1][0] - seg[1]
            share = gap / 2 if gap < 2 * p.pad_s else p.pad_s
            seg[1] += share
            raw[i + 1][0] = max(0.0, raw[i + 1][0] - share)
        else:
            seg[1] = min(duration_s, seg[1] + p.pad_s)
    # floor to the millisecond so a segment never ends past the audio
    return [(float(np.floor(s * 1000) / 1000), float(np.floor(min(e, duration_s) * 1000) / 1000)) for s, e in raw]

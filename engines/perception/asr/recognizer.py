"""Speech recognition of the clip's own audio: faster-whisper (CTranslate2) running Whisper base on the CPU.

One pass transcribes in the spoken language (detected, or chosen among `asr.languages`), a second pass with
Whisper's translate task gives the English text the lite LLM and the verbal cues read. Silero VAD (bundled with
faster-whisper) keeps non-speech out of the decoder and each 30 s window is decoded on its own
(`condition_on_previous_text=False`): together they avoid most hallucinations; hallucinations.py drops the rest.
Only the first `asr.max_audio_s` seconds are transcribed, and the transcript says so when it was cut.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.errors import BadRequest, ModelError
from engines.perception.asr.hallucinations import RawSegment, clean
from engines.perception.asr.model_files import MODEL_NAME, ensure_model
from engines.types import Transcript, TranscriptSegment, TranscriptWord
from xemo.settings import AsrSettings

SR = 16000
MIN_SECONDS = 0.2  # shorter audio cannot hold a word
SILENT_PEAK = 10 ** (-60 / 20)  # -60 dBFS: nothing to hear
log = logging.getLogger(__name__)


@dataclass
class AsrResult:
    """A recognised transcript, with the English segments (their own time spans) the verbal cues are timed by."""

    transcript: Transcript
    english_segments: list[TranscriptSegment] = field(default_factory=list)
    language_probability: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)  # segments dropped as hallucinations, per reason


class Recognizer:
    """Loads the checked model folder once; `transcribe` is thread-safe (calls are serialised: the decoder
    already uses every configured thread)."""

    def __init__(self, settings: AsrSettings) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.settings = settings
        path = ensure_model(settings.model_dir)
        try:
            # A folder, never a model name: a name would download from a model hub.
            self.model = WhisperModel(str(path), device="cpu", compute_type=settings.compute_type,
                                      cpu_threads=settings.cpu_threads, num_workers=1, local_files_only=True)
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"cannot load the ASR model ({MODEL_NAME}, compute type {settings.compute_type}): {e}"
                             ) from None
        self.batched = BatchedInferencePipeline(self.model) if settings.batch_size > 1 else None
        supported = set(self.model.supported_languages)
        unknown = [lang for lang in settings.languages if lang not in supported]
        if unknown:
            raise ModelError(f"asr.languages has codes Whisper does not know: {', '.join(unknown)}")
        self.name = recognizer_name(settings)
        self._lock = threading.Lock()

    def transcribe_batch(self, items: list[tuple[np.ndarray | None, int]]) -> list[AsrResult | None]:
        # faster-whisper batches the speech chunks of one audio (BatchedInferencePipeline, asr.batch_size), not
        # separate clips: each clip's language and task fix its decoder prompt.
        return [self.transcribe(audio, sr) for audio, sr in items]

    def transcribe(self, audio: np.ndarray | None, sample_rate: int) -> AsrResult | None:
        """None when nothing that sounds like speech was recognised."""
        if audio is None:
            return None
        x = _prepare(audio, sample_rate)
        truncated_at = None
        limit = int(self.settings.max_audio_s * SR)
        if len(x) > limit:
            x, truncated_at = x[:limit], round(limit / SR, 3)
        if len(x) < MIN_SECONDS * SR or float(np.max(np.abs(x))) < SILENT_PEAK:
            return None
        with self._lock:
            language, prob = self._language(x)
            if language is None:
                return None
            segs, dropped, language, prob = self._decode(x, language, "transcribe", prob)
            if not segs:
                return None
            english: list[RawSegment] = segs
            if language != "en" and self.settings.translate:
                english, dropped_en, _, _ = self._decode(x, language, "translate", prob)
                for k, v in dropped_en.items():
                    dropped[f"translate_{k}"] = dropped.get(f"translate_{k}", 0) + v
        text = _join(segs)
        en_text = " ".join(s.text for s in english).strip() if (language == "en" or self.settings.translate) else None
        t = Transcript(text=text, source="asr", language=language, english=en_text or None,
                       segments=[_segment(s) for s in segs],
                       truncated_at_s=truncated_at)
        en_segments = [TranscriptSegment(round(s.start, 2), round(s.end, 2), s.text) for s in english]
        return AsrResult(t, en_segments if t.english else [], round(prob, 3), dropped)

    def _language(self, x: np.ndarray) -> tuple[str | None, float]:
        """The language to decode in: Whisper's own detection inside `transcribe` when any language is allowed
        (returned as ""), else the most probable allowed one. None: the VAD heard no speech."""
        allowed = self.settings.languages
        if not allowed:
            return "", 0.0
        from faster_whisper.vad import get_speech_timestamps

        if not get_speech_timestamps(x):
            return None, 0.0
        _, _, probs = self.model.detect_language(audio=x, vad_filter=True)
        p = dict(probs)
        best = max(allowed, key=lambda lang: p.get(lang, 0.0))
        return best, float(p.get(best, 0.0))

    def _decode(self, x: np.ndarray, language: str, task: str, prob: float
                ) -> tuple[list[RawSegment], dict[str, int], str, float]:
        # Word timings for the original-language text only: the translation's words have no place in the audio.
        kwargs: dict[str, Any] = dict(language=language or None, task=task, beam_size=self.settings.beam_size,
                                      vad_filter=True, without_timestamps=False,
                                      word_timestamps=task == "transcribe")
        if self.batched is not None:
            gen, info = self.batched.transcribe(x, batch_size=self.settings.batch_size, **kwargs)
        else:
            gen, info = self.model.transcribe(x, condition_on_previous_text=False, **kwargs)
        raw = [RawSegment(s.start, s.end, s.text, s.avg_logprob, s.no_speech_prob, s.compression_ratio,
                          tuple((w.start, w.end, w.word, w.probability) for w in s.words or ()))
               for s in gen]
        kept, dropped = clean(raw)
        if not language:
            language, prob = info.language, float(info.language_probability)
        return kept, dropped, language, prob


def _segment(s: RawSegment) -> TranscriptSegment:
    words = [TranscriptWord(round(a, 2), round(b, 2), w.strip(), round(float(p), 3)) for a, b, w, p in s.words
             if w.strip()]
    return TranscriptSegment(round(s.start, 2), round(s.end, 2), s.text, words)


def _prepare(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim == 2:  # (channels, samples) or (samples, channels): mix down
        x = x.mean(axis=0 if x.shape[0] < x.shape[1] else 1)
    if x.ndim != 1:
        raise BadRequest("audio must be a mono or multi-channel waveform")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise BadRequest("the audio holds non-finite samples")
    if sample_rate != SR:
        from scipy.signal import resample_poly

        g = np.gcd(int(sample_rate), SR)
        x = resample_poly(x, SR // g, int(sample_rate) // g).astype(np.float32)
    return x


def _join(segs: list[RawSegment]) -> str:
    return " ".join(s.text for s in segs).strip()


def recognizer_name(settings: AsrSettings) -> str:
    """What the answer's model string says about the recogniser (known without loading it)."""
    return f"faster-whisper {_version()} {MODEL_NAME} {settings.compute_type}"


def _version() -> str:
    from importlib.metadata import version

    return version("faster-whisper")

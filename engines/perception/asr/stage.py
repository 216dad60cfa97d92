"""The ASR stage every profile runs through its stage runner, and the rule for which transcript an answer uses.

A client's transcript is used as given (source "client") and no ASR runs, unless `asr.always` is set; then what
was heard replaces it whenever something was recognised. Otherwise the recogniser runs on clips with speech.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from engines.perception.asr.recognizer import AsrResult, Recognizer
from engines.pipeline import Stage
from engines.types import Transcript
from xemo.settings import AsrSettings


class AsrStage(Stage):
    """(mono waveform, sample rate) -> AsrResult | None."""

    name = "asr"
    max_batch_size = 4

    def __init__(self, settings: AsrSettings) -> None:
        self.recognizer = Recognizer(settings)

    def run_batch(self, items: list[tuple[np.ndarray | None, int]]) -> list[AsrResult | None]:
        return self.recognizer.transcribe_batch(items)

    def warmup(self) -> None:
        # The encoder and language head on one window of silence-level features: allocates CTranslate2's buffers
        # (a real transcribe call on synthetic audio would be filtered out by the VAD before reaching the model).
        m = self.recognizer.model
        m.detect_language(features=np.full((m.model.n_mels, 3000), -1.5, np.float32))


def wants_asr(settings: AsrSettings, client_text: str | None, stages: Collection[str]) -> bool:
    """Whether the pipeline should run its ASR stage (one of the pipeline's `stages` names) for this request."""
    return "asr" in stages and settings.enabled and (not (client_text or "").strip() or settings.always)


def resolve_transcript(client_text: str | None, heard: AsrResult | None) -> Transcript | None:
    if heard is not None:
        return heard.transcript
    if client_text is not None and client_text.strip():
        return Transcript(text=client_text, source="client")
    return None


def english_text(transcript: Transcript | None) -> str | None:
    """The text the English-reading parts (the lite LLM, VADER, the grounding check) see."""
    if transcript is None:
        return None
    return transcript.english or transcript.text


"""The ASR stage every profile runs through its stage runner, and the rule for which transcript an answer uses.

A client's transcript is used as given (source "client") and no ASR runs, unless the request asks for ASR (its `asr`
option) or `asr.always` is set; then what was heard is the transcript whenever something was recognised (source
"asr", the client's text kept as `client_text`). Otherwise the recogniser runs on clips with speech. A request's
`asr: false` turns it off for that request.
"""

from __future__ import annotations

import dataclasses
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


def wants_asr(
    settings: AsrSettings, client_text: str | None, stages: Collection[str], requested: bool | None = None
) -> bool:
    """Whether the pipeline should run its ASR stage (one of the pipeline's `stages` names) for this request;
    `requested` is the request's own `asr` option (None: the settings decide)."""
    if requested is False or "asr" not in stages or not settings.enabled:
        return False
    return requested is True or settings.always or not (client_text or "").strip()


def asr_request_error(settings: AsrSettings, requested: bool | None, has_media: bool) -> str | None:
    """Why a request's `asr: true` cannot be honoured (None when it can, or was not asked for)."""
    if requested is not True:
        return None
    if not settings.enabled:
        return "asr: speech recognition is turned off here (setting asr.enabled)"
    if not has_media:
        return "asr: there is no clip to transcribe; a transcript alone has no speech to recognise"
    return None


def resolve_transcript(client_text: str | None, heard: AsrResult | None) -> Transcript | None:
    given = client_text if client_text is not None and client_text.strip() else None
    if heard is not None:
        return dataclasses.replace(heard.transcript, client_text=given)
    if given is not None:
        return Transcript(text=given, source="client")
    return None


def english_text(transcript: Transcript | None) -> str | None:
    """The text the English-reading parts (the lite LLM, VADER, the grounding check) see."""
    if transcript is None:
        return None
    return transcript.english or transcript.text

"""The ASR stage inside the lite profile: run on speech when no transcript is sent, through the stage runner; a
client's transcript is used as given with no ASR run, unless the request asks for ASR; silence gives no transcript
and no verbal cue."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import media
import pytest

from engines.ingest import ingest
from engines.lite.pipeline import LitePipeline
from engines.types import AnalyzeRequest, Answer

SAID = "I am so happy to see you again, this is wonderful."


@pytest.fixture(scope="module")
def lite(lite_pipeline: LitePipeline) -> LitePipeline:
    return lite_pipeline


@pytest.fixture(scope="module")
def asr_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("asr_clips")
    speech = media.speech(d / "said.wav", SAID)
    return {"speech": media.testsrc_clip(d / "speech.mp4", 4.0, audio=speech),
            "silent": media.testsrc_clip(d / "silent.mp4", 3.0, audio=media.silence(d / "silent.wav", 3.0))}


def analyze(p: LitePipeline, path: Path, transcript: str | None = None,
            asr: bool | None = None) -> tuple[Answer, list[str]]:
    """The answer, and the stages the pipeline asked its runner for (the real direct runner underneath)."""
    clip = ingest(path, None, p.settings.ingest)
    direct = p.direct_runner()
    called: list[str] = []

    async def run(name: str, item: Any) -> Any:
        called.append(name)
        return await direct(name, item)

    req = AnalyzeRequest(clip=clip, transcript=transcript, max_tokens=24, asr=asr)
    return asyncio.run(p.analyze(req, run)), called


def test_speech_without_a_transcript_is_recognised_and_its_cues_are_timed(lite: LitePipeline, asr_clips) -> None:
    answer, called = analyze(lite, asr_clips["speech"])
    assert "asr" in called and "asr" in answer.timings
    assert "faster-whisper" in answer.model and "Whisper base" in answer.model  # the answer names its models
    t = answer.transcript
    assert t is not None and t.source == "asr" and t.language == "en"
    assert "happy" in t.text.lower() and t.segments and t.segments[-1].end <= 4.5
    verbal = [c for c in answer.cues if c.modality == "verbal"]
    assert verbal and all(c.start is not None and c.end is not None and c.start < c.end for c in verbal)
    assert verbal[0].text.startswith('says: "') and verbal[0].evidence["source"] == "asr"
    assert "the words express joy" in [c.text for c in verbal]
    assert answer.to_dict()["transcript"]["source"] == "asr"


def test_a_client_transcript_is_used_as_given_with_no_asr_run(lite: LitePipeline, asr_clips) -> None:
    given = "Leave me alone, I am furious."
    answer, called = analyze(lite, asr_clips["speech"], given)
    assert "asr" not in called and "asr" not in answer.timings
    assert answer.transcript is not None and answer.transcript.source == "client"
    assert answer.transcript.text == given and answer.transcript.segments == []
    assert answer.transcript.client_text is None
    assert any(c.text == f'says: "{given}"' for c in answer.cues)


def test_asr_on_request_transcribes_the_speech_despite_a_client_transcript(lite: LitePipeline, asr_clips) -> None:
    given = "Leave me alone, I am furious."
    answer, called = analyze(lite, asr_clips["speech"], given, asr=True)
    assert "asr" in called and "asr" in answer.timings
    t = answer.transcript
    assert t is not None and t.source == "asr" and t.language == "en" and t.client_text == given
    assert "happy" in t.text.lower() and "furious" not in t.text.lower() and t.segments
    verbal = [c for c in answer.cues if c.modality == "verbal"]
    quote = next(c for c in verbal if c.text.startswith('says: "'))
    assert "happy" in quote.text.lower() and quote.evidence["source"] == "asr"  # it quotes what was heard
    assert all(c.start is not None for c in verbal) and "the words express joy" in [c.text for c in verbal]
    assert answer.to_dict()["transcript"]["client_text"] == given


def test_asr_false_never_transcribes(lite: LitePipeline, asr_clips) -> None:
    answer, called = analyze(lite, asr_clips["speech"], asr=False)
    assert "asr" not in called and answer.transcript is None
    assert not [c for c in answer.cues if c.modality == "verbal"]


def test_silence_gives_no_transcript_and_no_verbal_cue(lite: LitePipeline, asr_clips) -> None:
    for asr in (None, True):  # asked for or not: the VAD heard no speech, so the recogniser is not even asked
        answer, called = analyze(lite, asr_clips["silent"], asr=asr)
        assert "asr" not in called
        assert answer.transcript is None
        assert not [c for c in answer.cues if c.modality == "verbal"]

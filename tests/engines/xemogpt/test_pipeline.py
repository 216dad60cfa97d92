"""The xemogpt profile end to end on the tiny model: events, usage per modality, swappable front ends, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engines.types import AnalyzeRequest, Clip, DoneEvent, LabelEvent, Segment, SegmentEvent, TokenEvent
from xemo.settings import Settings, load_yaml

REPO = Path(__file__).resolve().parents[3]


def _hubert_frames(pipeline: Any, n_samples: int) -> int:
    n = min(n_samples, int(pipeline.max_audio_s * 16000))
    # HuBERT's conv stack: kernel/stride of the tiny config (same as HuBERT-Large): 50 frames/s
    for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), strict=True):
        n = (n - k) // s + 1
    return n


@pytest.fixture(scope="module")
def pipeline(tiny_settings: Settings) -> Any:
    from engines.pipeline import build_pipeline

    p = build_pipeline(tiny_settings)
    p.load()
    p.warmup()
    yield p
    p.close()


@pytest.fixture(scope="module")
def clip(tiny_settings: Settings, testsrc_mp4: Path) -> Clip:
    from engines.ingest import ingest

    return ingest(testsrc_mp4, None, tiny_settings.ingest)


def _collect(pipeline: Any, request: AnalyzeRequest) -> list[Any]:
    async def go() -> list[Any]:
        return [ev async for ev in pipeline.stream(request)]

    return asyncio.run(go())


def test_stream_label_then_tokens_then_answer(pipeline: Any, clip: Clip) -> None:
    events = _collect(pipeline, AnalyzeRequest(clip=clip, transcript="I cannot believe you did this again."))
    assert isinstance(events[0], LabelEvent) and isinstance(events[-1], DoneEvent)
    a = events[-1].answer
    # tokens as generated, then the free text as one segment marked as the model's own (it has no cues to cite)
    middle = events[1:-1]
    assert all(isinstance(e, TokenEvent) for e in middle[:-1]) and len(middle) > 1
    assert a.segments == ([Segment(a.explanation, "model_text")] if a.explanation else [])
    if a.explanation:
        assert isinstance(middle[-1], SegmentEvent) and middle[-1].segment == a.segments[0]
    labels = pipeline.settings.lite.labels
    assert a.profile == "xemogpt" and a.cues == [] and a.emotion["label"] == events[0].label
    assert set(a.emotion["scores"]) == set(labels) and abs(sum(a.emotion["scores"].values()) - 1) < 1e-3
    u = a.usage
    assert u["prompt_tokens_video"] == 16
    assert u["prompt_tokens_audio"] == _hubert_frames(pipeline, len(clip.audio)) > 100
    assert u["prompt_tokens"] == u["prompt_tokens_text"] + u["prompt_tokens_audio"] + u["prompt_tokens_video"]
    assert 0 < u["generated_tokens"] <= pipeline.settings.generation.max_tokens
    assert {"vision_encode", "audio_encode", "label", "decode", "time_to_label_s"} <= set(a.timings)


def test_request_labels_and_max_tokens_are_respected(pipeline: Any, clip: Clip) -> None:
    a = asyncio.run(pipeline.analyze(AnalyzeRequest(clip=clip, labels=["calm", "furious"], max_tokens=3)))
    assert a.emotion["label"] in ("calm", "furious") and set(a.emotion["scores"]) == {"calm", "furious"}
    assert a.usage["generated_tokens"] <= 3


def test_video_only_and_audio_only(pipeline: Any, clip: Clip) -> None:
    from dataclasses import replace

    said = "hello"  # the same subtitle in both (else the audio-only clip gets its recognised speech as subtitle)
    v = asyncio.run(pipeline.analyze(AnalyzeRequest(clip=replace(clip, audio=None, audio_info=None), transcript=said)))
    assert v.usage["prompt_tokens_audio"] == 0 and v.usage["prompt_tokens_video"] == 16
    a = asyncio.run(pipeline.analyze(AnalyzeRequest(clip=replace(clip, frames=None, video=None), transcript=said)))
    assert a.usage["prompt_tokens_video"] == 0 and a.usage["prompt_tokens_audio"] > 0
    assert a.usage["prompt_tokens_text"] < v.usage["prompt_tokens_text"] + 5  # one sentence each, dropped


def test_recognised_speech_fills_the_subtitle(pipeline: Any, clip: Clip) -> None:
    """No transcript: the clip's own speech, in English, is the subtitle; the same text sent by the client gives
    the same prompt and answer, and then no ASR runs."""
    heard = asyncio.run(pipeline.analyze(AnalyzeRequest(clip=clip, max_tokens=4)))
    t = heard.transcript
    assert t is not None and t.source == "asr" and t.language == "en" and "believe" in t.english.lower()
    assert "asr" in heard.timings
    given = asyncio.run(pipeline.analyze(AnalyzeRequest(clip=clip, transcript=t.english, max_tokens=4)))
    assert given.transcript.source == "client" and given.transcript.text == t.english
    assert "asr" not in given.timings
    assert given.usage == heard.usage and given.emotion == heard.emotion
    bare = asyncio.run(pipeline.analyze(AnalyzeRequest(clip=clip, transcript="   ", max_tokens=4)))
    assert bare.usage["prompt_tokens_text"] == heard.usage["prompt_tokens_text"]  # blank text: ASR fills it


def test_audio_stage_batches_mixed_lengths(pipeline: Any, clip: Clip) -> None:
    stage = pipeline.stages["audio_encode"]
    short, long = clip.audio[:20000], clip.audio
    alone = stage.run_batch([short])[0]
    batched = stage.run_batch([long, short, np.zeros(100, np.float32)])
    assert batched[1].shape == alone.shape == (_hubert_frames(pipeline, 20000), pipeline.llm_hidden)
    np.testing.assert_allclose(batched[1], alone, atol=1e-5)
    assert batched[2].shape == (0, pipeline.llm_hidden)  # under 25 ms: no token, no crash


def test_front_ends_are_swappable(pipeline: Any, clip: Clip) -> None:
    seen: list[tuple[int, ...]] = []
    original = pipeline.video_fn

    def fake(pixel_values: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(pixel_values.shape))
        return torch.zeros(pixel_values.shape[0], pipeline.num_frames, pipeline.llm_hidden)

    pipeline.video_fn = fake
    try:
        out = pipeline.stages["vision_encode"].run_batch([clip.frames])
    finally:
        pipeline.video_fn = original
    assert seen == [(1, 16, 3, 224, 224)] and not out[0].any()


def test_bundle_profile_gives_the_same_answer(tiny: dict[str, Any], bundle: tuple[Path, int], pipeline: Any,
                                              clip: Clip) -> None:
    from engines.pipeline import build_pipeline

    data = load_yaml(Path(tiny["config"]))
    data["xemogpt"] = {"bundle": str(bundle[0]), "llm_backend": "transformers"}
    p = build_pipeline(Settings(**data))
    p.load()
    try:
        req = dict(transcript="hello there", max_tokens=4)
        got = asyncio.run(p.analyze(AnalyzeRequest(clip=clip, **req)))
    finally:
        p.close()
    want = asyncio.run(pipeline.analyze(AnalyzeRequest(clip=clip, **req)))
    assert got.emotion == want.emotion and got.usage == want.usage and got.explanation == want.explanation


def test_cli_analyze_json(tiny: dict[str, Any], testsrc_mp4: Path, clip: Clip, pipeline: Any) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("XEMO_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "xemo.cli", "--config", str(tiny["config"]), "analyze", str(testsrc_mp4),
         "--transcript", "I cannot believe you did this again.", "--json"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    u = answer["usage"]
    assert answer["profile"] == "xemogpt" and answer["cues"] == []
    assert u["prompt_tokens_video"] == 16
    assert u["prompt_tokens_audio"] == _hubert_frames(pipeline, len(clip.audio))
    assert u["prompt_tokens_text"] > 100 and u["generated_tokens"] > 0

"""The lite profile end to end on real generated clips: real perception, the real SmolLM2 GGUF."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import media
import pytest

from engines.ingest import ingest
from engines.lite.grounding import ABSENCE, ungrounded
from engines.lite.pipeline import LitePipeline
from engines.types import AnalyzeRequest, Answer, CueEvent, DoneEvent, LabelEvent, TokenEvent


@pytest.fixture(scope="session")
def lite(lite_pipeline: LitePipeline) -> LitePipeline:
    return lite_pipeline


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("lite_clips")
    img = media.face_image(d / "astronaut.png")
    aroused = media.aroused_speech(d / "aroused.wav")
    calm = media.calm_speech(d / "calm.wav")
    silent = media.silence(d / "silence.wav", 3.0)
    return {
        "face_aroused": media.face_clip(d / "face_aroused.mp4", img, 3.0, audio=aroused),
        "face_calm": media.face_clip(d / "face_calm.mp4", img, 3.0, audio=calm),
        "face_silent": media.face_clip(d / "face_silent.mp4", img, 3.0, audio=silent),
        "face_mute": media.face_clip(d / "face_mute.mp4", img, 3.0),
        "pattern_aroused": media.testsrc_clip(d / "pattern_aroused.mp4", 3.0, audio=aroused),
        "pattern_calm": media.testsrc_clip(d / "pattern_calm.mp4", 3.0, audio=calm),
        "pattern_mute": media.testsrc_clip(d / "pattern_mute.mp4", 3.0),
        "calm_wav": calm,
    }


def analyze(p: LitePipeline, path: Path, transcript: str | None = None, max_tokens: int = 64) -> tuple[list, Answer]:
    clip = ingest(path, None, p.settings.ingest)

    async def go() -> tuple[list, Answer]:
        req = AnalyzeRequest(clip=clip, transcript=transcript, max_tokens=max_tokens)
        events = [ev async for ev in p.stream(req)]
        return events, events[-1].answer

    return asyncio.run(go())


def perceived(answer: Answer) -> set[str]:
    return {c.modality for c in answer.cues}


def said(answer: Answer) -> str | None:
    """The text quotes are checked against: the client's transcript, or the English of what was recognised."""
    t = answer.transcript
    return t and (t.english or t.text)


def test_smiling_face_gives_a_smile_cue_and_a_grounded_answer(lite: LitePipeline, clips: dict) -> None:
    events, answer = analyze(lite, clips["face_aroused"])
    kinds = [e.type for e in events]
    assert kinds[0] == "label" and kinds[-1] == "done"
    assert kinds.index("done") == len(kinds) - 1
    assert all(k != "label" for k in kinds[1:])
    assert isinstance(events[0], LabelEvent) and events[0].label == answer.emotion["label"]
    assert answer.emotion["label"] in lite.lite.labels
    assert abs(sum(answer.emotion["scores"].values()) - 1) < 1e-2
    visual = [c for c in answer.cues if c.modality == "visual"]
    assert any("smil" in c.text or "mouth turn up" in c.text for c in visual), [c.text for c in visual]
    assert [e.cue for e in events if isinstance(e, CueEvent)] == answer.cues
    streamed = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert streamed.strip() == answer.explanation
    assert answer.explanation.startswith("In the video,")
    assert ungrounded(answer.explanation, perceived(answer), said(answer)) == []
    assert answer.timings["time_to_label_s"] <= answer.timings["total_s"]
    assert answer.usage["generated_tokens"] > 0


def test_test_pattern_makes_no_facial_claims(lite: LitePipeline, clips: dict) -> None:
    _, answer = analyze(lite, clips["pattern_aroused"])
    assert not [c for c in answer.cues if c.modality == "visual"]
    assert answer.explanation.startswith(ABSENCE["visual"])
    assert ungrounded(answer.explanation, perceived(answer), said(answer)) == []


def test_audio_only_upload_and_no_cues_at_all(lite: LitePipeline, clips: dict) -> None:
    _, answer = analyze(lite, clips["calm_wav"])
    assert perceived(answer) == {"auditory", "verbal"} and answer.transcript.source == "asr"  # its own speech
    assert ABSENCE["visual"] in answer.explanation
    _, answer = analyze(lite, clips["pattern_mute"])
    assert answer.cues == []
    assert ABSENCE["visual"] in answer.explanation and ABSENCE["auditory"] in answer.explanation
    assert ungrounded(answer.explanation, set()) == []


def test_explanations_never_claim_a_missing_modality(lite: LitePipeline, clips: dict) -> None:
    """Many generated clips x transcripts: the check never fires on what the model wrote."""
    transcripts = [None, "I can't take this anymore, leave me alone."]
    names = [k for k in clips if k != "calm_wav"]
    dropped = 0
    for name, transcript in itertools.product(names, transcripts):
        _, answer = analyze(lite, clips[name], transcript)
        assert ungrounded(answer.explanation, perceived(answer), said(answer)) == [], (name, transcript,
                                                                                      answer.explanation)
        if transcript is None:  # verbal cues can then only come from the clip's own recognised speech
            assert not [c for c in answer.cues if c.modality == "verbal"] or answer.transcript.source == "asr"
        dropped += answer.usage["dropped_sentences"]
    assert dropped == 0


def test_labels_override_and_cancellation(lite: LitePipeline, clips: dict) -> None:
    clip = ingest(clips["face_calm"], None, lite.settings.ingest)

    async def go() -> None:
        req = AnalyzeRequest(clip=clip, labels=["joy", "anger"], max_tokens=64)
        agen = lite.stream(req)
        first = await agen.__anext__()
        assert isinstance(first, LabelEvent) and first.label in {"joy", "anger"}
        await agen.aclose()  # the client left: generation must stop and free its slot
        assert lite.llm.stats()["running"] == 0
        events = [e async for e in lite.stream(AnalyzeRequest(clip=clip, max_tokens=8))]
        assert isinstance(events[-1], DoneEvent)

    asyncio.run(go())


@pytest.mark.skipif(not (media.SAMPLES / "sample_00000007.mp4").exists(), reason="shared sample not present")
def test_shared_sample_shows_a_smile(lite: LitePipeline) -> None:
    _, answer = analyze(lite, media.SAMPLES / "sample_00000007.mp4")
    visual = [c.text for c in answer.cues if c.modality == "visual"]
    assert any("smil" in t or "mouth turn up" in t for t in visual), visual

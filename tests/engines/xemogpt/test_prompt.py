"""The prompt is the released text, with each embedding where the released prompt_wrap puts it."""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import BadRequest
from engines.xemogpt import prompt

# inference.py of the authors' repository, verbatim (the instruction block keeps its indentation)
RELEASED = (
    "###Human: The audio content is as follows: <Audio><AudioHere></Audio>. "
    "Meanwhile, we uniformly sample raw frames from the video: <Video><VideoHere></Video>. "
    "The subtitle of this video is: <Subtitle>{s}</Subtitle>. "
    "Now, please answer my question based on all the provided information. "
    "\n                Please describe the speaker's emotional state in the video. "
    "\n                **Output Requirements:**  "
    "\n                Present the synthesized multimodal information in a well-structured paragraph, such as: "
    "'In the video, ... In the audio, ...'. "
    "\n                Conclude the paragraph with an emotion state inference based on all cues. "
    "\n                 ###Assistant: "
)
LABELS = ["neutral", "happy", "angry"]


def count(text: str) -> int:
    return len(text.split())


def _emb(n: int, tag: float) -> np.ndarray:
    return np.full((n, 4), tag, np.float32)


def _render(segments: list) -> str:
    """Text with each soft segment written back as its placeholder."""
    out = ""
    for s in segments:
        if isinstance(s, str):
            out += s
        else:
            out += "<AudioHere>" if s[0, 0] == 1.0 else "<VideoHere>"
    return out


def test_full_prompt_is_the_released_text_in_the_released_order() -> None:
    audio, video = _emb(37, 1.0), _emb(16, 2.0)
    p = prompt.build(audio, video, "I cannot believe it.", LABELS, count, 2048)
    kinds = [type(s).__name__ for s in p.segments]
    assert kinds == ["str", "ndarray", "str", "ndarray", "str"]  # text, audio, text, video, text
    assert p.segments[1] is audio and p.segments[3] is video
    assert p.segments[0].endswith("<Audio>") and p.segments[2].startswith("</Audio>. Meanwhile")
    assert _render(p.segments) == RELEASED.format(s="I cannot believe it.")
    assert prompt.instruction("I cannot believe it.") == RELEASED.format(s="I cannot believe it.")
    assert p.usage["prompt_tokens_audio"] == 37 and p.usage["prompt_tokens_video"] == 16
    assert p.usage["prompt_tokens"] == p.usage["prompt_tokens_text"] + 37 + 16  # text includes the BOS


def test_label_question_shares_the_multimodal_context() -> None:
    audio, video = _emb(5, 1.0), _emb(16, 2.0)
    p = prompt.build(audio, video, None, LABELS, count, 2048)
    assert p.label_segments[:4] == p.segments[:4]
    assert "neutral, happy, angry" in p.label_segments[4]
    assert p.label_segments[4].endswith("###Assistant: The emotion is")


@pytest.mark.parametrize(("has_audio", "has_video", "subtitle"), [
    (False, True, "hello"), (True, False, "hello"), (True, True, None), (False, True, ""),
])
def test_missing_parts_are_dropped_cleanly(has_audio: bool, has_video: bool, subtitle: str | None) -> None:
    p = prompt.build(_emb(9, 1.0) if has_audio else None, _emb(16, 2.0) if has_video else None, subtitle,
                     LABELS, count, 2048)
    text = _render(p.segments)
    assert ("<Audio>" in text) == has_audio and ("<Video>" in text) == has_video
    assert ("<Subtitle>" in text) == bool(subtitle)
    if has_video and not has_audio:
        assert text.startswith("###Human: We uniformly sample raw frames from the video: <Video><VideoHere>")
    assert sum(isinstance(s, np.ndarray) for s in p.segments) == has_audio + has_video
    assert p.usage["prompt_tokens_audio"] == (9 if has_audio else 0)


def test_audio_tokens_are_truncated_to_fit_the_context() -> None:
    full = prompt.build(_emb(600, 1.0), _emb(16, 2.0), "hi", LABELS, count, 4096)
    budget = full.usage["prompt_tokens"] - 100
    p = prompt.build(_emb(600, 1.0), _emb(16, 2.0), "hi", LABELS, count, budget)
    assert p.usage["prompt_tokens_audio"] == 500 and p.usage["audio_tokens_truncated"] == 100
    assert p.usage["prompt_tokens"] <= budget and p.notes
    assert len(p.segments[1]) == 500 and len(p.segments[3]) == 16  # video untouched


def test_a_prompt_that_cannot_fit_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="context"):
        prompt.build(_emb(10, 1.0), _emb(16, 2.0), "word " * 3000, LABELS, count, 2048)

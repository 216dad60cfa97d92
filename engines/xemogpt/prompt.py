"""The released XEmoGPT prompt (inherited from AffectGPT) and its layout as backend segments.

Sentences are the authors' `inference.py` verbatim, including the odd whitespace of the instruction block:
the model was tuned on exactly this text. The placeholders are replaced by embeddings in the released order
(text, audio tokens, text, video tokens, text); the pipeline prepends the pad-token embedding as BOS.
A request without audio, video or subtitle drops that sentence (the released code would leave an empty
placeholder in the text), and "Meanwhile, " goes with the audio sentence it refers back to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engines.errors import BadRequest
from engines.llm.base import Segment

HUMAN = "###Human: "
AUDIO = "The audio content is as follows: <Audio><AudioHere></Audio>. "
VIDEO = "Meanwhile, we uniformly sample raw frames from the video: <Video><VideoHere></Video>. "
SUBTITLE = "The subtitle of this video is: <Subtitle>{subtitle}</Subtitle>. "
ASK = "Now, please answer my question based on all the provided information. "
_IND = " " * 16  # the indentation of the released triple-quoted block, part of the trained text
REASON = (
    "\n" + _IND + "Please describe the speaker's emotional state in the video. \n"
    + _IND + "**Output Requirements:**  \n"
    + _IND + "Present the synthesized multimodal information in a well-structured paragraph, such as: "
    "'In the video, ... In the audio, ...'. \n"
    + _IND + "Conclude the paragraph with an emotion state inference based on all cues. \n"
    + _IND
)
ASSISTANT = " ###Assistant: "
# Our addition (the released model has no label head): a short question in place of the description request,
# answered by the LLM's likelihood of each label word after "The emotion is".
LABEL_QUESTION = "Which one word best names the speaker's emotion: {labels}? "
LABEL_ANSWER = "###Assistant: The emotion is"
log = logging.getLogger(__name__)

STOP = ["###"]  # the model continues with "###Human:" after its answer


@dataclass
class Prompt:
    """Segments without the BOS embedding; `label_segments` ask for the label instead of the description."""

    segments: list[Segment]
    label_segments: list[Segment]
    usage: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def instruction(subtitle: str | None, audio: bool = True, video: bool = True) -> str:
    """The released instruction as plain text with placeholders (for display and tests)."""
    text = HUMAN
    if audio:
        text += AUDIO
    if video:
        text += VIDEO if audio else VIDEO.replace("Meanwhile, we", "We")
    if subtitle:
        text += SUBTITLE.format(subtitle=subtitle)
    return text + ASK + REASON + ASSISTANT


def build(audio: np.ndarray | None, video: np.ndarray | None, subtitle: str | None, labels: list[str],
          count: Callable[[str], int], budget: int) -> Prompt:
    """Lay out the prompt; `count` tokenizes text, `budget` is the context left for the prompt (incl. BOS).

    Too long a prompt loses audio tokens from the end (12 s of audio is ~600 tokens, the rest ~200): the
    released code would cut the end of the prompt instead, question included.
    """
    subtitle = (subtitle or "").strip() or None
    has_a = audio is not None and len(audio) > 0
    has_v = video is not None and len(video) > 0
    full = instruction(subtitle, has_a, has_v)
    tail_desc = ASK + REASON + ASSISTANT
    tail_label = ASK + LABEL_QUESTION.format(labels=", ".join(labels)) + LABEL_ANSWER
    # split at the placeholders; pieces between them stay text segments
    pieces: list[Segment] = []
    rest = full[: len(full) - len(tail_desc)]
    for tag, emb in (("<AudioHere>", audio if has_a else None), ("<VideoHere>", video if has_v else None)):
        if emb is None:
            continue
        head, rest = rest.split(tag, 1)
        pieces += [head, emb]
    text_tokens = sum(count(p) for p in pieces if isinstance(p, str))
    head_tokens_desc = count(rest + tail_desc)
    text_tokens_label = text_tokens + count(rest + tail_label)
    text_tokens += head_tokens_desc
    n_video = len(video) if has_v else 0
    n_audio = len(audio) if has_a else 0
    notes: list[str] = []
    over = 1 + text_tokens + n_video + n_audio - budget
    over = max(over, 1 + text_tokens_label + n_video + n_audio - budget)
    if over > 0:
        if over > n_audio:
            raise BadRequest(f"the prompt needs {over - n_audio} more tokens than the context allows; "
                             "shorten the transcript or lower max_tokens")
        keep = n_audio - over
        notes.append(f"audio tokens truncated from {n_audio} to {keep} to fit the {budget}-token prompt budget")
        log.warning(notes[-1])
        assert audio is not None
        cut = audio[:keep]
        pieces = [cut if p is audio else p for p in pieces]
        pieces = [p for p in pieces if not (isinstance(p, np.ndarray) and len(p) == 0)]
        n_audio = keep
    usage = {"prompt_tokens": 1 + text_tokens + n_audio + n_video, "prompt_tokens_text": 1 + text_tokens,
             "prompt_tokens_audio": n_audio, "prompt_tokens_video": n_video}
    if notes:
        usage["audio_tokens_truncated"] = over
    return Prompt(segments=[*pieces, rest + tail_desc], label_segments=[*pieces, rest + tail_label],
                  usage=usage, notes=notes)

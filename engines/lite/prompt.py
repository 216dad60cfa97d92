"""Few-shot completion prompts for the lite profile's small LLM.

SmolLM2-135M follows a completion pattern far better than chat instructions (offline-components.md §1.3), so
the prompt shows worked analyses in the EMER style ("In the video, ... In the audio, ...") and ends where the
model must continue: after "Emotion:" to choose the label, after "Explanation:" to explain it. The worked
examples include missing modalities, so the model sees that a missing modality is simply not mentioned.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.types import Cue, Modality

MAX_CUES_PER_MODALITY = 5

HEADER = (
    "Below are short analyses of a person in a video clip. Each lists the cues that were observed, names the "
    "person's emotion, and explains it using only those cues.\n\n"
)

EXAMPLES = (
    "Cues:\n"
    "- face: the corners of the mouth turn up; the cheeks rise; the eyes narrow slightly\n"
    "- voice: the pitch is high and varied; speaks quickly\n"
    "Emotion: happy\n"
    "Explanation: In the video, the corners of the mouth turn up and the cheeks rise, a clear smile. In the audio, "
    "the pitch is high and lively. These cues suggest the person is happy.\n\n"
    "Cues:\n"
    "- face: brows drawn together; lips pressed together\n"
    "- voice: none (no speech heard)\n"
    "Emotion: angry\n"
    "Explanation: In the video, the brows are drawn together and the lips are pressed, a tense frown. These cues "
    "suggest the person is angry.\n\n"
    "Cues:\n"
    "- face: none (no face seen)\n"
    "- voice: the voice is soft and low; long pauses\n"
    "- words: says \"I just don't know anymore\"; the wording is negative\n"
    "Emotion: sad\n"
    "Explanation: In the audio, the voice is soft and low with long pauses. The words \"I just don't know "
    "anymore\" read as hopeless. These cues suggest the person is sad.\n\n"
)

_NAMES: dict[Modality, str] = {"visual": "face", "auditory": "voice", "verbal": "words"}
_NONE: dict[Modality, str] = {"visual": "none (no face seen)", "auditory": "none (no speech heard)"}
# The explanation opens on the first modality that has cues, as the EMER descriptions do.
_OPENERS: dict[Modality, str] = {"visual": "In the video,", "auditory": "In the audio,", "verbal": "The words"}


@dataclass
class PromptParts:
    label_prompt: str  # ends with "Emotion:"
    explanation_prefix: str  # appended after the chosen label; ends with the opener the model continues
    opener: str  # the part of the explanation we wrote ourselves (streamed first)


def cue_lines(cues: list[Cue], perceived: dict[Modality, bool], extra: dict[Modality, str]) -> str:
    lines = []
    for m in ("visual", "auditory", "verbal"):
        mine = sorted((c for c in cues if c.modality == m), key=lambda c: -c.strength)[:MAX_CUES_PER_MODALITY]
        parts = [c.text for c in mine]
        if extra.get(m):
            parts.append(extra[m])
        if parts:
            lines.append(f"- {_NAMES[m]}: " + "; ".join(parts))
        elif m in _NONE and not perceived.get(m, False):
            lines.append(f"- {_NAMES[m]}: {_NONE[m]}")
    return "\n".join(lines) if lines else "- none"


def build(cues: list[Cue], perceived: dict[Modality, bool], labels: list[str],
          extra: dict[Modality, str] | None = None) -> PromptParts:
    """`perceived[m]` is True when modality m was present and produced cues; `extra` adds evidence lines such
    as the expression classifier's reading."""
    body = cue_lines(cues, perceived, extra or {})
    header = HEADER + f"The emotion is one of: {', '.join(labels)}.\n\n"
    label_prompt = header + EXAMPLES + "Cues:\n" + body + "\nEmotion:"
    with_cues = [m for m in ("visual", "auditory", "verbal") if any(c.modality == m for c in cues)]
    opener = _OPENERS[with_cues[0]] if with_cues else "No cues were perceived, so"
    return PromptParts(label_prompt, "\nExplanation: " + opener, opener)

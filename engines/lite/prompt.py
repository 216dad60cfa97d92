"""Few-shot completion prompts for the lite profile's small LLM.

SmolLM2-135M follows a completion pattern far better than chat instructions (offline-components.md §1.3), so
the prompt shows worked analyses in the EMER style ("In the video, ... In the audio, ...") and ends where the
model must continue: after "Emotion:" to choose the label, after "Explanation:" to explain it.

A small model copies its examples, so the examples are rendered with the same modalities present as the clip
being analysed: an example never talks about a modality the clip lacks, and the model is not shown one to copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.types import Cue, Modality

MAX_CUES_PER_MODALITY = 5
MODALITIES: tuple[Modality, ...] = ("visual", "auditory", "verbal")

HEADER = (
    "Below are short analyses of a person in a video clip. Each lists the cues that were observed, names the "
    "person's emotion, and explains it using only those cues.\n"
)


@dataclass(frozen=True)
class Example:
    label: str
    cues: dict[Modality, str]  # the cue line per modality
    sentences: dict[Modality, str]  # the explanation sentence per modality


EXAMPLES = (
    Example(
        "happy",
        {"visual": "the corners of the mouth turn up; the cheeks rise",
         "auditory": "the pitch is high and varied; speaks quickly",
         "verbal": "says: \"we actually won\"; positive wording"},
        {"visual": "In the video, the corners of the mouth turn up and the cheeks rise, a clear smile.",
         "auditory": "In the audio, the pitch is high and lively.",
         "verbal": "The words \"we actually won\" are cheerful."},
    ),
    Example(
        "angry",
        {"visual": "brows drawn together; lips pressed together",
         "auditory": "the voice is loud; the tone is intense",
         "verbal": "says: \"stop doing that\"; negative wording"},
        {"visual": "In the video, the brows are drawn together and the lips are pressed, a tense frown.",
         "auditory": "In the audio, the voice is loud and sharp.",
         "verbal": "The words \"stop doing that\" are a harsh command."},
    ),
    Example(
        "sad",
        {"visual": "the corners of the mouth turn down; looks down",
         "auditory": "the voice is soft and low-pitched; long pauses",
         "verbal": "says: \"I just don't know anymore\"; negative wording"},
        {"visual": "In the video, the corners of the mouth turn down and the gaze drops.",
         "auditory": "In the audio, the voice is soft and low with long pauses.",
         "verbal": "The words \"I just don't know anymore\" read as hopeless."},
    ),
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
    modalities: tuple[Modality, ...]  # those with cues, in order


def _lines(parts: dict[Modality, str], present: tuple[Modality, ...]) -> str:
    out = []
    for m in MODALITIES:
        if m in present:
            out.append(f"- {_NAMES[m]}: {parts[m]}")
        elif m in _NONE:
            out.append(f"- {_NAMES[m]}: {_NONE[m]}")
    return "\n".join(out)


def _example(ex: Example, present: tuple[Modality, ...]) -> str:
    explanation = " ".join(ex.sentences[m] for m in present)
    return (f"\nCues:\n{_lines(ex.cues, present)}\nEmotion: {ex.label}\n"
            f"Explanation: {explanation} These cues suggest the person is {ex.label}.\n")


def build(cues: list[Cue], labels: list[str]) -> PromptParts:
    texts: dict[Modality, str] = {}
    for m in MODALITIES:
        mine = sorted((c for c in cues if c.modality == m), key=lambda c: -c.strength)[:MAX_CUES_PER_MODALITY]
        parts = [c.text for c in mine]
        if parts:
            texts[m] = "; ".join(parts)
    return _build(texts, labels)


def content_free(present: tuple[Modality, ...], labels: list[str]) -> PromptParts:
    """The same prompt with every cue replaced by "N/A": the model's label prior for contextual calibration."""
    return _build({m: "N/A" for m in present}, labels)


def _build(texts: dict[Modality, str], labels: list[str]) -> PromptParts:
    present = tuple(m for m in MODALITIES if m in texts)
    shots = "".join(_example(ex, present) for ex in EXAMPLES) if present else ""
    label_prompt = (HEADER + f"The emotion is one of: {', '.join(labels)}.\n" + shots
                    + f"\nCues:\n{_lines(texts, present)}\nEmotion:")
    opener = _OPENERS[present[0]] if present else ""
    return PromptParts(label_prompt, "\nExplanation: " + opener, opener, present)

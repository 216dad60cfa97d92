"""Few-shot completion prompts for the lite profile's small LLM.

SmolLM2-135M follows a completion pattern far better than chat instructions (offline-components.md §1.3), so
the prompt shows worked analyses, one per label of the default set, and ends where the model must continue:
after "Emotion:" to choose the label, after "Explanation:" to explain it.

The examples' explanations are written in the form the explanation grammar allows (engines/lite/explain.py):
cue clauses, connectives and, after each sentence, that modality's reading. The grammar offers only the answer's
own cues, so nothing an example states can reach an answer unless it is also one of that answer's cues. Examples
are rendered with the same modalities as the clip, so the model is never shown a sentence about a modality the
clip lacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.lite.explain import (
    CONNECTIVES,
    MODALITIES,
    OPENERS,
    chosen_cues,
    clause,
    interpretation,
    readings,
)
from engines.types import Cue, Modality

HEADER = (
    "Below are short analyses of a person in a video clip. Each lists the cues that were observed, names the "
    "person's emotion, and explains it using only those cues.\n"
)


@dataclass(frozen=True)
class Example:
    label: str
    cues: dict[Modality, tuple[str, ...]]  # cue phrases per modality, as perception words them


EXAMPLES = (
    Example("happy", {"visual": ("smiles", "the corners of the mouth turn up"),
                      "auditory": ("the tone rises and falls", "speaks quickly"),
                      "verbal": ('says: "we actually won"', "positive wording")}),
    Example("sad", {"visual": ("the corners of the mouth turn down", "looks down"),
                    "auditory": ("speaks slowly", "long pauses between phrases"),
                    "verbal": ('says: "I just don\'t know anymore"', "the words express sadness")}),
    Example("angry", {"visual": ("the brows are furrowed", "lips pressed together"),
                      "auditory": ("the voice is loud", "speaks in an intense tone"),
                      "verbal": ('says: "stop doing that"', "negative wording")}),
    Example("worried", {"visual": ("the inner brows lower", "the lips stretch sideways"),
                        "auditory": ("the voice is high-pitched", "a long pause"),
                        "verbal": ('says: "what if they never call back"', "the words express worry")}),
    Example("surprise", {"visual": ("raises the eyebrows", "the mouth opens wide"),
                         "auditory": ("the tone suddenly rises", "the voice is loud"),
                         "verbal": ('says: "wait, really?"', "asks a question")}),
    Example("neutral", {"visual": ("blinks", "tilts the head slightly"),
                        "auditory": ("the tone is monotonous", "the tone is steady"),
                        "verbal": ('says: "the meeting is at ten"', "neutral wording")}),
)

_NAMES: dict[Modality, str] = {"visual": "face", "auditory": "voice", "verbal": "words"}
_NONE: dict[Modality, str] = {"visual": "none (no face seen)", "auditory": "none (no speech heard)"}


@dataclass
class PromptParts:
    label_prompt: str  # ends with "Emotion:"
    explanation_prefix: str  # appended after the chosen label; the model continues after "Explanation:"
    modalities: tuple[Modality, ...]  # those with cues, in order
    head: str  # the start of label_prompt shared by every clip with these labels and modalities (through "Cues:")

    @property
    def segments(self) -> list[str]:
        """The label prompt as the LLM gets it, the shared head and then the clip's own cue lines: as separate
        parts, each is a prefill-batch boundary, so the LLM's prefix cache reuses the head whole."""
        return [self.head, self.label_prompt[len(self.head):]]

    def explanation_segments(self, label: str) -> list[str]:
        """The explanation prompt: the label prompt just scored (reused whole from the cache), then the label."""
        return [*self.segments, " " + label + self.explanation_prefix]


def _lines(parts: dict[Modality, str], present: tuple[Modality, ...]) -> str:
    out = []
    for m in MODALITIES:
        if m in present:
            out.append(f"- {_NAMES[m]}: {parts[m]}")
        elif m in _NONE:
            out.append(f"- {_NAMES[m]}: {_NONE[m]}")
    return "\n".join(out)


def _example(ex: Example, present: tuple[Modality, ...]) -> str:
    explanation = ""
    reads = readings(ex.label)
    for k, m in enumerate(present):  # each sentence followed by a reading not used before, while there is one
        cs = [clause(Cue(m, t)) for t in ex.cues[m]]
        explanation += " " + OPENERS[m] + CONNECTIVES[0].join(cs) + "." + (interpretation(m, reads[k])
                                                                           if k < len(reads) else "")
    lines = {m: "; ".join(ex.cues[m]) for m in present}
    return f"\nCues:\n{_lines(lines, present)}\nEmotion: {ex.label}\nExplanation:{explanation}\n"


def build(cues: list[Cue], labels: list[str]) -> PromptParts:
    texts = {m: "; ".join(c.text for c in mine) for m, mine in chosen_cues(cues).items()}
    return _build(texts, labels)


def content_free(present: tuple[Modality, ...], labels: list[str]) -> PromptParts:
    """The same prompt with every cue replaced by "N/A": the model's label prior for contextual calibration."""
    return _build({m: "N/A" for m in present}, labels)


def _build(texts: dict[Modality, str], labels: list[str]) -> PromptParts:
    present = tuple(m for m in MODALITIES if m in texts)
    shots = "".join(_example(ex, present) for ex in EXAMPLES) if present else ""
    head = HEADER + f"The emotion is one of: {', '.join(labels)}.\n" + shots + "\nCues:\n"
    return PromptParts(head + f"{_lines(texts, present)}\nEmotion:", "\nExplanation:", present, head)

"""The lite few-shot prompt: cue lines per modality, one example per label, rendered with the clip's modalities."""

import re

from engines.lite import explain, prompt
from engines.types import Cue
from xemo.settings import DEFAULT_LABELS


def test_prompt_lists_cues_by_strength_and_marks_missing_modalities() -> None:
    cues = [Cue("visual", "brows drawn together", 0.0, 1.0, 0.4), Cue("visual", "smiles", 0.5, 2.0, 0.9)]
    parts = prompt.build(cues, ["happy", "sad"])
    body = parts.label_prompt.rsplit("Cues:\n", 1)[1]
    assert body == "- face: smiles; brows drawn together\n- voice: none (no speech heard)\nEmotion:"
    assert "one of: happy, sad." in parts.label_prompt
    assert parts.modalities == ("visual",)
    assert parts.explanation_prefix == "\nExplanation:"


def test_every_configured_label_has_a_worked_example() -> None:
    assert {ex.label for ex in prompt.EXAMPLES} >= set(DEFAULT_LABELS)
    text = prompt.build([Cue("visual", "smiles", 0, 1, 0.9)], list(DEFAULT_LABELS)).label_prompt
    for lb in DEFAULT_LABELS:
        assert f"\nEmotion: {lb}\n" in text, lb


def test_examples_are_written_in_the_grammar_form() -> None:
    """Each example explanation is cue clauses, connectives and a reading: the form the model must continue."""
    cues = [Cue("visual", "smiles", 0, 1, 0.9), Cue("auditory", "the voice is loud", 0, 1, 0.5),
            Cue("verbal", 'says: "hi"', None, None, 1.0)]
    text = prompt.build(cues, list(DEFAULT_LABELS)).label_prompt
    for ex in prompt.EXAMPLES:
        body = text.split(f"\nEmotion: {ex.label}\nExplanation:", 1)[1].split("\n", 1)[0]
        for m, phrases in ex.cues.items():
            for p in phrases:
                body = body.replace(explain.clause(Cue(m, p)), " ")
        readings = [explain.interpretation(m, r) for m in explain.MODALITIES for r in explain.readings(ex.label)]
        for piece in [*explain.OPENERS.values(), *explain.CONNECTIVES, *readings]:
            body = body.replace(piece, " ")
        assert re.sub(r"[\s.]+", "", body) == "", (ex.label, body)


def test_examples_never_mention_a_modality_the_clip_lacks() -> None:
    parts = prompt.build([Cue("auditory", "speaks quickly", 0.0, 2.0, 0.7)], ["neutral"])
    assert parts.label_prompt.count("Explanation: In the audio,") == len(prompt.EXAMPLES)
    assert "In the video" not in parts.label_prompt and "says:" not in parts.label_prompt
    assert parts.label_prompt.count("- face: none (no face seen)") == len(prompt.EXAMPLES) + 1


def test_no_cues_gives_no_examples() -> None:
    parts = prompt.build([], ["neutral"])
    assert parts.modalities == ()
    assert "Explanation:" not in parts.label_prompt


def test_content_free_prompt_keeps_the_examples() -> None:
    cues = [Cue("visual", "smiles", 0, 1, 0.9), Cue("verbal", 'says: "hi"', None, None, 1.0)]
    real, free = prompt.build(cues, ["happy"]), prompt.content_free(("visual", "verbal"), ["happy"])
    assert real.label_prompt.rsplit("\nCues:", 1)[0] == free.label_prompt.rsplit("\nCues:", 1)[0]
    assert free.label_prompt.endswith("- face: N/A\n- voice: none (no speech heard)\n- words: N/A\nEmotion:")


def test_the_head_is_shared_and_the_segments_are_the_prompt() -> None:
    face, voice = Cue("visual", "smiles", 0, 1, 0.9), Cue("auditory", "speaks quickly", 0, 1, 0.7)
    parts, other = prompt.build([face, voice], ["happy", "sad"]), prompt.build([voice, Cue("visual", "frowns")],
                                                                              ["happy", "sad"])
    assert parts.head == other.head and parts.head.endswith("\nCues:\n")
    assert parts.segments == [parts.head, "- face: smiles\n- voice: speaks quickly\nEmotion:"]
    assert "".join(parts.segments) == parts.label_prompt
    assert "".join(parts.explanation_segments("happy")) == parts.label_prompt + " happy\nExplanation:"
    assert prompt.build([voice], ["happy", "sad"]).head != parts.head  # other modalities, other examples

"""The lite few-shot prompt: cue lines per modality, missing modalities said as such, opener choice."""

from engines.lite import prompt
from engines.types import Cue


def test_prompt_lists_cues_by_strength_and_marks_missing_modalities() -> None:
    cues = [Cue("visual", "brows drawn together", 0.0, 1.0, 0.4), Cue("visual", "smiles", 0.5, 2.0, 0.9)]
    parts = prompt.build(cues, {"visual": True, "auditory": False}, ["happy", "sad"])
    body = parts.label_prompt.rsplit("Cues:\n", 1)[1]
    assert body.startswith("- face: smiles; brows drawn together\n- voice: none (no speech heard)")
    assert parts.label_prompt.endswith("Emotion:")
    assert "one of: happy, sad." in parts.label_prompt
    assert parts.opener == "In the video,"
    assert parts.explanation_prefix == "\nExplanation: In the video,"


def test_opener_follows_the_first_modality_with_cues() -> None:
    cues = [Cue("auditory", "speaks quickly", 0.0, 2.0, 0.7)]
    assert prompt.build(cues, {"auditory": True}, ["neutral"]).opener == "In the audio,"
    assert prompt.build([], {}, ["neutral"]).opener.startswith("No cues")


def test_extra_evidence_line_counts_as_a_face_cue() -> None:
    parts = prompt.build([], {"visual": True}, ["happy"], {"visual": "the expression looks happy"})
    assert "- face: the expression looks happy" in parts.label_prompt

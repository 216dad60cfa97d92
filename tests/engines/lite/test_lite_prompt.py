"""The lite few-shot prompt: cue lines per modality, examples rendered with the clip's modalities only."""

from engines.lite import prompt
from engines.types import Cue


def test_prompt_lists_cues_by_strength_and_marks_missing_modalities() -> None:
    cues = [Cue("visual", "brows drawn together", 0.0, 1.0, 0.4), Cue("visual", "smiles", 0.5, 2.0, 0.9)]
    parts = prompt.build(cues, ["happy", "sad"])
    body = parts.label_prompt.rsplit("Cues:\n", 1)[1]
    assert body == "- face: smiles; brows drawn together\n- voice: none (no speech heard)\nEmotion:"
    assert "one of: happy, sad." in parts.label_prompt
    assert parts.modalities == ("visual",)
    assert parts.opener == "In the video,"
    assert parts.explanation_prefix == "\nExplanation: In the video,"


def test_examples_never_mention_a_modality_the_clip_lacks() -> None:
    parts = prompt.build([Cue("auditory", "speaks quickly", 0.0, 2.0, 0.7)], ["neutral"])
    assert parts.opener == "In the audio,"
    assert parts.label_prompt.count("Explanation: In the audio,") == len(prompt.EXAMPLES)
    assert "In the video" not in parts.label_prompt and "says:" not in parts.label_prompt
    assert parts.label_prompt.count("- face: none (no face seen)") == len(prompt.EXAMPLES) + 1


def test_no_cues_gives_no_examples_and_no_opener() -> None:
    parts = prompt.build([], ["neutral"])
    assert parts.modalities == () and parts.opener == ""
    assert "Explanation:" not in parts.label_prompt


def test_content_free_prompt_keeps_the_examples() -> None:
    cues = [Cue("visual", "smiles", 0, 1, 0.9), Cue("verbal", 'says: "hi"', None, None, 1.0)]
    real, free = prompt.build(cues, ["happy"]), prompt.content_free(("visual", "verbal"), ["happy"])
    assert real.label_prompt.rsplit("\nCues:", 1)[0] == free.label_prompt.rsplit("\nCues:", 1)[0]
    assert free.label_prompt.endswith("- face: N/A\n- voice: none (no speech heard)\n- words: N/A\nEmotion:")

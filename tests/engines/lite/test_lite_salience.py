"""The salience ranking of the lite profile: the weights come from the committed counts, and a measure annotators
never mention does not lead a sentence however strong it is."""

import json
from pathlib import Path

from engines.lite import prompt
from engines.lite.explain import Explainer, chosen_cues
from engines.lite.salience import KINDS, MENTIONS, kind, ranked, weight
from engines.types import Cue, assign_cue_ids

ROOT = Path(__file__).resolve().parents[3]

# Phrases perception writes (engines/perception/visual/cues.py, audio/cues.py), one or more per kind.
PHRASES = {
    "smile": ["smiles", "smiles broadly", "smiles slightly"],
    "corners_up": ["the corners of the mouth turn up clearly"],
    "corners_down": ["the corners of the mouth pull down", "the corners of the mouth turn down slightly"],
    "brow_furrow": ["the brows are deeply furrowed", "frowns deeply"],
    "brow_raise": ["raises the eyebrows slightly", "eyebrows raised high"],
    "inner_brow": ["the inner brows lower"],
    "eyes_widen": ["the eyes widen", "the eyes open wide", "the eyes open a little wider"],
    "squint": ["the eyes squint slightly"],
    "blink": ["blinks frequently"],
    "look_down": ["looks far down", "lowers the head slightly"],
    "head_tilt": ["tilts the head strongly to one side"],
    "nod": ["nods slightly"],
    "head_shake": ["shakes the head"],
    "turn_aside": ["turns the head slightly aside", "turns the head away"],
    "mouth_open": ["the jaw drops wide", "the mouth falls wide open", "the mouth opens"],
    "lips_pressed": ["lips pressed together slightly"],
    "lip_stretch": ["the lips stretch sideways"],
    "expression": ["the facial expression looks happy"],
    "loud": ["the voice is loud"],
    "soft": ["the voice is quiet", "speaks in a whisper"],
    "high_pitch": ["the voice is high-pitched"],
    "low_pitch": ["the voice is low-pitched"],
    "fast": ["speaks quickly"],
    "slow": ["speaks slowly"],
    "pause": ["long pauses between phrases", "a long pause"],
    "flat": ["the tone is monotonous", "the intonation is flat"],
    "wide_range": ["the tone rises and falls"],
    "pitch_rise": ["the tone suddenly rises"],
    "level_rise": ["speaks louder"],
    "calm": ["the tone is calm", "the tone is calm and soft", "the tone is steady"],
    "intense": ["speaks in an intense tone"],
    "tense": ["the voice sounds tense"],
    "hoarse": ["the voice is hoarse"],
    "breathy": ["the voice is breathy"],
    "tremble": ["the voice trembles"],
    "laughter": ["laughs briefly"],
}


def test_every_kind_has_its_count_from_the_bench_json() -> None:
    counted = json.loads((ROOT / "bench" / "results" / "cue_phrasing.json").read_text())["mentions"]
    assert counted == MENTIONS
    assert set(MENTIONS) == set(KINDS)


def test_perception_phrases_map_to_their_kind() -> None:
    assert set(PHRASES) == set(KINDS)
    for k, phrases in PHRASES.items():
        m = KINDS[k][0]
        for p in phrases:
            assert kind(Cue(m, p)) == k, p
    assert kind(Cue("verbal", "positive wording")) is None


def test_an_unmentioned_measure_ranks_below_a_mentioned_one_of_lower_strength() -> None:
    assert MENTIONS["high_pitch"] < MENTIONS["loud"]
    high = Cue("auditory", "the voice is high-pitched", 0, 4, 1.0)
    loud = Cue("auditory", "the voice is loud", 0, 4, 0.575)
    assert weight(high) < weight(loud)
    assert ranked([high, loud]) == [loud, high]
    # strength still counts within a kind's weight
    assert weight(Cue("auditory", "the voice is loud", 0, 4, 0.9)) > weight(loud)


def test_the_prompt_and_the_grammar_share_the_ranking() -> None:
    cues = assign_cue_ids([Cue("auditory", "the voice is high-pitched", 0, 4, 1.0),
                           Cue("auditory", "the voice is loud", 0, 4, 0.575),
                           Cue("visual", "smiles", 0, 4, 0.6)])
    assert [c.text for c in chosen_cues(cues)["auditory"]] == ["the voice is loud", "the voice is high-pitched"]
    parts = prompt.build(cues, ["happy", "sad"])
    assert parts.label_prompt.rstrip().endswith(
        "- face: smiles\n- voice: the voice is loud; the voice is high-pitched\nEmotion:")
    ex = Explainer(cues, "happy", {"happy": 0.9, "sad": 0.1})
    audio = next(s for s in ex.sentences if s.modality == "auditory")
    assert [t for t, _ in audio.clauses] == ["the voice is loud", "the voice is high-pitched"]

"""What perception states holds together: opposite cues resolved, a cap per modality, and one account of speech
when the detector and the transcript disagree (real espeak-ng / sox audio, real transcripts)."""

from __future__ import annotations

from pathlib import Path

import media
import numpy as np
import pytest

from engines.perception.audio import AudioPerceiver
from engines.perception.audio.reconcile import reconcile_speech
from engines.perception.opposites import CHANGES, OPPOSITES, side, unresolved_opposites
from engines.perception.resolve import cap_by_strength, finalize_cues, resolve_opposites
from engines.perception.verbal import verbal_cues
from engines.types import Cue
from xemo.settings import LiteSettings


@pytest.fixture(scope="module")
def perceiver() -> AudioPerceiver:
    return AudioPerceiver(LiteSettings())


load = media.read_wav


def cue(text: str, start: float | None, end: float | None, strength: float, modality: str = "visual") -> Cue:
    return Cue(modality, text, start, end, strength, {"action": text})  # type: ignore[arg-type]


def test_opposite_cues_in_one_span_yield_one_cue_the_dominant():
    up = cue("the corners of the mouth turn up", 0.5, 2.0, 0.7)
    down = cue("the corners of the mouth turn down slightly", 1.0, 2.5, 0.35)
    blink = cue("blinks", 1.2, 1.2, 0.9)
    out = resolve_opposites([up, down, blink])
    assert [c.text for c in out] == ["the corners of the mouth turn up", "blinks"]
    assert out[0].evidence["outweighs"][0]["text"] == down.text
    assert unresolved_opposites([up, down]) and not unresolved_opposites(out)
    # the other way round: the stronger side wins whichever comes first
    out = resolve_opposites([cue("raises the eyebrows", 0, 3, 0.4), cue("the brows are furrowed", 1, 2, 0.8)])
    assert [c.text for c in out] == ["the brows are furrowed"]


def test_sequential_opposites_become_one_change_over_time():
    out = resolve_opposites([cue("smiles", 0.0, 1.5, 0.8), cue("the corners of the mouth turn down", 2.0, 3.5, 0.5),
                             cue("the voice is loud", 0.0, 1.0, 0.6, "auditory"),
                             cue("the voice is quiet", 1.0, 3.0, 0.4, "auditory")])
    assert [(c.text, c.start, c.end) for c in out] == [("the smile fades", 0.0, 3.5),
                                                       ("the voice grows softer", 0.0, 3.0)]
    assert out[0].evidence["from"]["text"] == "smiles" and out[0].strength == pytest.approx(0.65)
    assert not unresolved_opposites(out)


def test_opposites_of_different_modalities_or_times_are_left_alone():
    cues = [cue("the voice is loud", 0, 2, 0.5, "auditory"), cue("the voice is quiet", 0, 2, 0.5, "verbal"),
            cue("the eyes widen", 0, 1, 0.5), cue("blinks", 0.5, 0.5, 0.5)]
    assert resolve_opposites(cues) == cues


def test_every_family_has_its_changes_and_no_change_phrase_is_an_opposite_of_its_own_family():
    assert len(CHANGES) == len(OPPOSITES)
    for i, (a_then_b, b_then_a) in enumerate(CHANGES):
        for text in (a_then_b, b_then_a):
            s = side(text)
            assert s is None or s[0] == i, text


def test_mixed_wording_states_the_stronger_reading_only():
    res = verbal_cues("I am sad but it is okay.")
    texts = [c.text for c in res.cues]
    assert "the words express sadness" in texts
    assert not any("positive wording" in t for t in texts)
    assert not unresolved_opposites(res.cues)


def test_cap_keeps_the_strongest_per_modality_in_order():
    cues = [cue(f"v{i}", i, i + 1, s) for i, s in enumerate([0.3, 0.9, 0.5, 0.8])]
    cues += [cue("a", 0, 1, 0.1, "auditory")]
    out = cap_by_strength(cues, {"visual": 2})
    assert [c.text for c in out] == ["v1", "v3", "a"]
    assert finalize_cues(cues, {"visual": 1, "auditory": 1}) == [cues[1], cues[4]]


def test_audio_cap_holds_on_real_speech(aroused_wav):
    p = AudioPerceiver(LiteSettings(max_auditory_cues=2))
    capped = p.perceive(*load(aroused_wav))
    full = AudioPerceiver(LiteSettings(max_auditory_cues=20)).perceive(*load(aroused_wav))
    assert len(full.cues) > 2 and len(capped.cues) == 2
    top = sorted(c.strength for c in full.cues)[-2:]
    assert sorted(c.strength for c in capped.cues) == top


@pytest.fixture(scope="module")
def whisper_wav(media_dir: Path) -> Path:
    """A whispered espeak-ng sentence at amplitude 20, then 26 dB quieter with sox (peak about -46 dBFS)."""
    raw = media.speech(media_dir / "whisper_raw.wav", text="I am so sorry, I did not mean to hurt you.", amp=20,
                       voice="en-us+whisper")
    out = media_dir / "whisper_soft.wav"
    media.run(["sox", str(raw), str(out), "vol", "0.05"])
    return out


def test_a_soft_whispered_sentence_counts_as_speech(perceiver, whisper_wav):
    x, sr = load(whisper_wav)
    assert 20 * np.log10(np.abs(x).max()) < -40  # really soft
    res = perceiver.perceive(x, sr)
    assert res.speech_found and res.speech_source == "vad"
    (s, e), = res.speech_segments
    assert s < 0.5 and e > 2.0  # the sentence, not a fragment of it
    texts = {c.text for c in res.cues}
    assert "speaks in a whisper" in texts and "the voice is quiet" in texts
    assert res.features["vad_gain_db"] > 20


def test_transcript_words_and_no_detected_speech_are_reconciled(perceiver, media_dir):
    noise = media_dir / "pink_noise.wav"
    media.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise), "synth", "3", "pinknoise", "vol", "0.05"])
    heard = perceiver.perceive(*load(noise))
    assert not heard.speech_found  # the detector hears no speech in the noise
    res = reconcile_speech(heard, "I'm so sorry.")
    assert res is not None and res.speech_found and res.speech_source == "transcript"
    assert res.cues == [] and res.speech_segments == []  # no vocal cue is invented
    assert "too soft to measure" in res.summary
    # nothing to reconcile: no words, no audio track, or speech already detected
    assert reconcile_speech(heard, " ... ") is heard and reconcile_speech(None, "Hello.") is None
    speech = perceiver.perceive(*load(media.speech(media_dir / "hello.wav", text="hello there")))
    assert reconcile_speech(speech, "hello there") is speech

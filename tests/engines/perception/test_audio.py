"""The lite audio front end: real espeak-ng speech in, EMER-style vocal cues out (no mocks)."""

from __future__ import annotations

from pathlib import Path

import media
import numpy as np
import pytest

from engines.errors import BadRequest, MediaError
from engines.perception.audio import AudioPerceiver, AudioResult
from engines.perception.audio.laughter import LAUGHTER
from engines.perception.audio.vad import SileroVad
from xemo.settings import LiteSettings

SAMPLE_WAV = media.SAMPLES / "sample_00000007.wav"


@pytest.fixture(scope="module")
def perceiver() -> AudioPerceiver:
    return AudioPerceiver(LiteSettings())


load = media.read_wav


@pytest.fixture(scope="module")
def slow_wav(media_dir: Path) -> Path:
    """The same sentence low, soft and clearly slow (100 wpm)."""
    return media.speech(media_dir / "slow_soft_low.wav", pitch=25, speed=100, amp=45)


@pytest.fixture(scope="module")
def results(perceiver, aroused_wav, calm_wav, slow_wav, speech_wav) -> dict[str, AudioResult]:
    return {
        name: perceiver.perceive(*load(p))
        for name, p in {"aroused": aroused_wav, "calm": calm_wav, "slow": slow_wav, "normal": speech_wav}.items()
    }


def texts(res: AudioResult) -> set[str]:
    return {c.text for c in res.cues}


def test_high_loud_fast_vs_low_soft_slow_give_opposite_cues(results):
    aroused, slow = results["aroused"], results["slow"]
    assert {"the voice is loud", "the voice is high-pitched", "speaks quickly"} <= texts(aroused)
    assert {"the voice is quiet", "the voice is low-pitched", "speaks slowly"} <= texts(slow)
    assert not texts(aroused) & {"the voice is quiet", "the voice is low-pitched", "speaks slowly"}
    assert not texts(slow) & {"the voice is loud", "the voice is high-pitched", "speaks quickly"}
    assert "speaks in an intense tone" in texts(aroused)
    assert "the tone is calm and soft" in texts(slow)
    fa, fs = aroused.features, slow.features
    assert fa["loudness_db"] > fs["loudness_db"] + 6
    assert fa["f0_median_hz"] > fs["f0_median_hz"] * 1.3
    assert fa["syllable_rate"] > fs["syllable_rate"] * 1.4


def test_calm_builder_is_low_and_soft_and_slower_than_aroused(results):
    calm, aroused = results["calm"], results["aroused"]
    assert {"the voice is quiet", "the voice is low-pitched"} <= texts(calm)
    assert not texts(calm) & {"the voice is loud", "the voice is high-pitched", "speaks quickly"}
    assert calm.features["syllable_rate"] < aroused.features["syllable_rate"]
    assert calm.features["loudness_db"] < aroused.features["loudness_db"]


def test_neutral_espeak_voice_gets_no_level_cues(results):
    # 175 wpm, default pitch and amplitude: neither loud nor soft, high nor low, fast nor slow.
    extremes = {
        "the voice is loud",
        "the voice is quiet",
        "the voice is high-pitched",
        "the voice is low-pitched",
        "speaks quickly",
        "speaks slowly",
    }
    assert not texts(results["normal"]) & extremes
    assert "the tone is steady" in texts(results["normal"])


def test_cues_are_well_formed_and_inside_the_clip(results, aroused_wav, calm_wav, slow_wav, speech_wav):
    paths = {"aroused": aroused_wav, "calm": calm_wav, "slow": slow_wav, "normal": speech_wav}
    for name, res in results.items():
        x, sr = load(paths[name])
        duration = len(x) / sr
        assert res.speech_found and res.speech_segments and res.summary
        for s, e in res.speech_segments:
            assert 0 <= s < e <= duration + 1e-6
        for c in res.cues:
            assert c.modality == "auditory"
            assert 0.0 <= c.start < c.end <= duration + 1e-6, (name, c)
            assert 0.0 < c.strength <= 1.0
            assert c.evidence
        assert all(np.isfinite(v) for v in res.features.values())


def test_silence_and_no_audio_give_no_vocal_cues(perceiver, silence_wav):
    for audio, sr in [
        load(silence_wav),
        (None, 16000),
        (np.zeros(16000, np.float32), 16000),
        (np.zeros(10, np.float32), 16000),
        (np.zeros(0, np.float32), 16000),
    ]:
        res = perceiver.perceive(audio, sr)
        assert res.speech_found is False
        assert res.cues == [] and res.speech_segments == []
        assert "no" in res.summary or "silence" in res.summary


def test_noise_alone_is_not_speech(perceiver):
    noise = np.random.default_rng(0).normal(0, 0.05, 3 * 16000).astype(np.float32)
    res = perceiver.perceive(noise, 16000)
    assert not res.speech_found and not res.cues


def test_long_pause_is_located_between_the_phrases(perceiver, speech_wav):
    x, sr = load(speech_wav)
    gap = np.zeros(int(1.5 * sr), np.float32)
    res = perceiver.perceive(np.concatenate([gap[: sr // 2], x, gap, x]), sr)
    (pause,) = [c for c in res.cues if c.text in ("a long pause", "long pauses between phrases")]
    first_end = 0.5 + len(x) / sr
    assert first_end - 0.3 <= pause.start <= first_end + 0.3
    assert pause.end - pause.start >= 1.2
    assert res.speech_segments[0][0] >= 0.35  # leading silence is not speech


def test_other_sample_rates_int16_and_stereo_give_the_same_speech(perceiver, aroused_wav):
    import librosa

    x, sr = load(aroused_wav)
    ref = perceiver.perceive(x, sr)
    up = perceiver.perceive(librosa.resample(x, orig_sr=sr, target_sr=44100), 44100)
    pcm = perceiver.perceive((x * 32767).astype(np.int16), sr)
    stereo = perceiver.perceive(np.stack([x, x], axis=1), sr)
    for res in (up, pcm, stereo):
        assert len(res.speech_segments) == len(ref.speech_segments)
        assert abs(res.speech_segments[0][0] - ref.speech_segments[0][0]) < 0.1
        assert {"the voice is loud", "the voice is high-pitched"} <= texts(res)


def test_bad_input_raises_typed_errors(perceiver):
    with pytest.raises(MediaError):
        perceiver.perceive(np.array([0.0, np.nan] * 8000, np.float32), 16000)
    with pytest.raises(BadRequest):
        perceiver.perceive(np.zeros((4, 4, 4), np.float32), 16000)
    with pytest.raises(BadRequest):
        perceiver.perceive(np.zeros(16000, np.float32), 0)
    with pytest.raises(BadRequest):
        perceiver.perceive(np.array(["a", "b"]), 16000)


def test_batch_matches_single_calls(perceiver, aroused_wav, silence_wav):
    items = [load(aroused_wav), (None, 16000), load(silence_wav)]
    batch = perceiver.perceive_batch(items)
    assert [r.speech_found for r in batch] == [True, False, False]
    assert texts(batch[0]) == texts(perceiver.perceive(*items[0]))


def test_trembling_voice(perceiver, speech_wav, media_dir):
    shaky = media_dir / "vibrato.wav"
    media.ffmpeg("-i", str(speech_wav), "-af", "vibrato=f=6:d=0.5", "-ar", "16000", "-c:a", "pcm_s16le", str(shaky))
    assert "the voice trembles" in texts(perceiver.perceive(*load(shaky)))
    assert "the voice trembles" not in texts(perceiver.perceive(*load(speech_wav)))


def test_whisper_is_breathy_and_unvoiced(perceiver, media_dir):
    res = perceiver.perceive(*load(media.speech(media_dir / "whisper.wav", voice="en-us+whisper")))
    assert res.speech_found
    assert "speaks in a whisper" in texts(res)
    assert not texts(res) & {"the voice is high-pitched", "the voice is low-pitched"}


def test_creaky_unvoiced_voice_is_hoarse_not_whisper(perceiver, media_dir):
    res = perceiver.perceive(*load(media.speech(media_dir / "croak.wav", voice="en-us+croak")))
    assert "the voice is hoarse" in texts(res)
    assert "speaks in a whisper" not in texts(res)


def test_laughter_like_bursts(perceiver, media_dir, results):
    res = perceiver.perceive(*load(media.speech(media_dir / "haha.wav", text="ha ha ha ha ha ha", pitch=70)))
    assert LAUGHTER in texts(res)
    assert all(LAUGHTER not in texts(r) for r in results.values())


def test_regular_knocks_are_not_laughter(perceiver, speech_wav, media_dir):
    knocks = media_dir / "knocks.wav"
    tone = "if(lt(mod(t\\,0.25)\\,0.03)\\,sin(2*PI*900*t)*exp(-mod(t\\,0.25)*80)\\,0)"
    media.ffmpeg("-f", "lavfi", "-i", f"aevalsrc='{tone}':s=16000:d=2", "-c:a", "pcm_s16le", str(knocks))
    x = np.concatenate([load(speech_wav)[0], load(knocks)[0]])
    assert LAUGHTER not in texts(perceiver.perceive(x, 16000))


def test_vad_matches_silero_reference_implementation(aroused_wav, calm_wav):
    torch = pytest.importorskip("torch")
    from silero_vad import get_speech_timestamps, load_silero_vad

    x = np.concatenate([load(aroused_wav)[0], np.zeros(16000, np.float32), load(calm_wav)[0]])
    ours = SileroVad().segments(x)
    ref = get_speech_timestamps(torch.from_numpy(x), load_silero_vad(onnx=True), return_seconds=True)
    assert len(ours) == len(ref)
    for (s, e), r in zip(ours, ref, strict=True):
        assert abs(s - r["start"]) <= 0.1 and abs(e - r["end"]) <= 0.1


def test_parselmouth_backend_agrees_on_the_contrast(aroused_wav, calm_wav):
    pytest.importorskip("parselmouth")
    p = AudioPerceiver(LiteSettings(audio_backend="parselmouth"))
    aroused, calm = p.perceive(*load(aroused_wav)), p.perceive(*load(calm_wav))
    assert aroused.features["f0_median_hz"] > calm.features["f0_median_hz"] * 1.3
    assert 0 < aroused.features["jitter_pct"] < 5 and aroused.features["hnr_db"] > 0
    assert "the voice is high-pitched" in texts(aroused) and "the voice is low-pitched" in texts(calm)


@pytest.mark.skipif(not SAMPLE_WAV.is_file(), reason="shared sample not present")
def test_shared_sample(perceiver):
    res = perceiver.perceive(*load(SAMPLE_WAV))
    print("\nsample_00000007.wav:", res.summary)
    for c in res.cues:
        print(f"  [{c.start:.2f}-{c.end:.2f}] {c.text} (strength {c.strength}) {c.evidence}")
    assert res.speech_found
    # A female voice around 300 Hz: clearly high-pitched against the typical female range.
    assert "the voice is high-pitched" in texts(res)

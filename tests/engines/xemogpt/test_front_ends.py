"""The video and audio front ends compute what the released model computes, with the token counts it gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from engines.xemogpt.audio import waveforms_to_inputs
from engines.xemogpt.checkpoint import read_state_dict
from engines.xemogpt.video import frames_to_pixel_values, select_frames


def _layer_sd(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def released_sd(tiny: dict[str, Any]) -> dict[str, torch.Tensor]:
    return read_state_dict(tiny["checkpoint"])


@pytest.fixture(scope="module")
def speech(speech_wav: Path) -> np.ndarray:
    wave, sr = sf.read(speech_wav, dtype="float32")
    assert sr == 16000
    return wave


def _frames(seed: int, n: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 96, 128, 3), dtype=np.uint8)


def test_video_gives_16_tokens_equal_to_the_released_computation(tiny: dict[str, Any], sources: Any,
                                                                 front_ends: tuple[Any, Any],
                                                                 released_sd: dict[str, torch.Tensor]) -> None:
    from transformers import CLIPModel
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    video, _ = front_ends
    pv = frames_to_pixel_values(sources.image_processor, [_frames(0)])
    assert pv.shape == (1, 16, 3, 224, 224)
    with torch.no_grad():
        got = video(pv)
        # reference: the released VisualTextEncoder path written out from the released keys
        clip = CLIPModel.from_pretrained(tiny["clip"]).eval()
        feats = clip.vision_model(pixel_values=pv[0]).last_hidden_state[:, 0][None]
        h = feats + released_sd["visual_encoder.position_embedding"]
        for i in range(2):
            layer = CLIPEncoderLayer(clip.config.vision_config).eval()
            layer.load_state_dict(_layer_sd(released_sd, f"visual_encoder.visual_alignment_layer.{i}."))
            h = layer(h, None)
        want = h @ released_sd["visual_llm_project.weight"].T + released_sd["visual_llm_project.bias"]
    assert got.shape == (1, 16, sources.llm_hidden)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_frame_selection_is_uniform() -> None:
    frames = np.arange(32)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    sel = select_frames(frames.astype(np.uint8), 16)
    assert len(sel) == 16 and sel[0, 0, 0, 0] == 0 and sel[-1, 0, 0, 0] == 31
    assert len(select_frames(frames[:5].astype(np.uint8), 16)) == 16


def test_video_batch_equals_single(sources: Any, front_ends: tuple[Any, Any]) -> None:
    video, _ = front_ends
    a, b = _frames(1), _frames(2, n=20)
    with torch.no_grad():
        alone = video(frames_to_pixel_values(sources.image_processor, [a]))
        both = video(frames_to_pixel_values(sources.image_processor, [b, a]))
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-4)


def _released_audio(tiny: dict[str, Any], sd: dict[str, torch.Tensor], waves: list[np.ndarray]) -> list[torch.Tensor]:
    """The released AudioEncoder + encode_audio path, written out from the released keys (full FxF mask)."""
    from transformers import HubertModel, Wav2Vec2FeatureExtractor
    from transformers.models.hubert.modeling_hubert import HubertEncoderLayer

    hubert = HubertModel.from_pretrained(tiny["hubert"], attn_implementation="eager").eval()
    fx = Wav2Vec2FeatureExtractor.from_pretrained(tiny["hubert"])
    inputs = fx([w[: 12 * 16000] for w in waves], padding=True, return_tensors="pt", sampling_rate=16000)
    with torch.no_grad():
        h = hubert(**inputs).last_hidden_state
        mask = hubert._get_feature_vector_attention_mask(h.shape[1], inputs["attention_mask"])
        h[~mask] = 0.0
        full = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        full = full.expand(h.shape[0], 1, h.shape[1], h.shape[1])
        for i in range(2):
            layer = HubertEncoderLayer(hubert.config).eval()
            layer.load_state_dict(_layer_sd(sd, f"audio_encoder.audio_alignment_layer.{i}."))
            h = layer(h, attention_mask=full)
        h[~mask] = 0.0
        out = h @ sd["audio_llm_project.weight"].T + sd["audio_llm_project.bias"]
    return [out[i][mask[i]] for i in range(len(waves))]


def test_audio_tokens_are_the_valid_hubert_frames(tiny: dict[str, Any], sources: Any, front_ends: tuple[Any, Any],
                                                  released_sd: dict[str, torch.Tensor], speech: np.ndarray) -> None:
    _, audio = front_ends
    short = speech[: 16000 * 2]
    long = np.concatenate([speech] * 4)  # > 12 s: only the first 12 s count
    assert len(long) > 12 * 16000
    iv, am = waveforms_to_inputs(sources.feature_extractor, [short, long])
    assert iv.shape[1] == 12 * 16000 and am.dtype == torch.int64
    with torch.no_grad():
        tokens, valid = audio(iv, am)
    n_short = int(audio.hubert._get_feat_extract_output_lengths(torch.tensor(len(short))))
    assert valid.dtype == torch.bool
    assert valid.sum(1).tolist() == [n_short, 599]  # 50 frames/s; 12 s -> 599 HuBERT frames
    want = _released_audio(tiny, released_sd, [short, long])
    for i in range(2):
        torch.testing.assert_close(tokens[i][valid[i]], want[i], atol=1e-5, rtol=1e-4)


def test_short_clip_alone_equals_batched_with_a_longer_one(sources: Any, front_ends: tuple[Any, Any],
                                                           speech: np.ndarray) -> None:
    _, audio = front_ends
    short = speech[: 16000 + 1234]
    with torch.no_grad():
        t1, v1 = audio(*waveforms_to_inputs(sources.feature_extractor, [short]))
        t2, v2 = audio(*waveforms_to_inputs(sources.feature_extractor, [speech, short]))
    assert v1.all() and v2[1].sum() == v1.sum() < v2[0].sum()
    torch.testing.assert_close(t2[1][v2[1]], t1[0], atol=1e-5, rtol=1e-4)

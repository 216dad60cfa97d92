"""`xemo convert-checkpoint` writes a bundle that reloads without the checkpoint and gives identical results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engines.errors import ModelError
from engines.xemogpt.audio import waveforms_to_inputs
from engines.xemogpt.bundle import from_bundle
from engines.xemogpt.video import frames_to_pixel_values
from xemo.settings import XEmoGPTSettings


def test_bundle_layout_and_manifest(bundle: tuple[Path, int]) -> None:
    out, rc = bundle
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "xemo-xemogpt-bundle" and m["lora"] == {"r": 4, "alpha": 8, "merged": True}
    assert m["report"]["front_ends"]["missing"] == 0 and m["report"]["llm"]["lora_merged"] == 6
    for name in ("bridges.safetensors", "clip/config.json", "hubert/preprocessor_config.json", "llm/config.json",
                 "llm/tokenizer.json"):
        assert (out / name).is_file(), name
    # --gguf: written when llama.cpp's converter is installed, otherwise said clearly (exit 3, bundle usable)
    if "gguf_error" in m:
        assert rc == 3 and "not available" in m["gguf_error"]
    else:
        assert rc == 0 and (out / "llm.gguf").is_file()


def test_bundle_reloads_with_identical_embeddings(bundle: tuple[Path, int], sources: Any,
                                                  front_ends: tuple[Any, Any]) -> None:
    out, _ = bundle
    src = from_bundle(XEmoGPTSettings(bundle=out))  # no clip/hubert/llm/checkpoint settings at all
    video_b, audio_b = src.build_modules()
    video, audio = front_ends
    frames = np.random.default_rng(3).integers(0, 255, (16, 64, 80, 3), dtype=np.uint8)
    wave = np.random.default_rng(4).standard_normal(23456).astype(np.float32) * 0.1
    with torch.no_grad():
        pv = frames_to_pixel_values(src.image_processor, [frames])
        assert torch.equal(pv, frames_to_pixel_values(sources.image_processor, [frames]))
        assert torch.equal(video_b(pv), video(pv))
        inputs = waveforms_to_inputs(src.feature_extractor, [wave])
        (tb, vb), (t, v) = audio_b(*inputs), audio(*inputs)
        assert torch.equal(vb, v) and torch.equal(tb, t)
    assert src.pad_token_id == sources.pad_token_id and src.llm_hidden == sources.llm_hidden


def test_bundle_llm_is_the_merged_llm(bundle: tuple[Path, int], sources: Any) -> None:
    from safetensors.torch import load_file

    out, _ = bundle
    merged_at_start = load_file(str(Path(sources.llm_path) / "model.safetensors"))
    in_bundle = load_file(str(out / "llm" / "model.safetensors"))
    assert merged_at_start.keys() == in_bundle.keys()
    assert all(torch.equal(merged_at_start[k], in_bundle[k]) for k in in_bundle)


def test_bundle_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="xemogpt.bundle: directory not found"):
        from_bundle(XEmoGPTSettings(bundle=tmp_path / "absent"))
    with pytest.raises(ModelError, match="no manifest.json"):
        from_bundle(XEmoGPTSettings(bundle=tmp_path))

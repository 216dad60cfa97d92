"""The released checkpoint layout loads onto our modules: rename table, LoRA merge, report, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from engines.errors import CheckpointMismatch, ModelError
from engines.xemogpt.checkpoint import (
    TRAINED_PREFIXES,
    TRAINING_ONLY,
    apply_checkpoint,
    read_state_dict,
    rename,
)
from engines.xemogpt.model import from_checkpoint, split_llm
from xemo.settings import XEmoGPTSettings


@pytest.mark.parametrize(("released", "ours"), [
    ("visual_encoder.visual_alignment_layer.1.self_attn.q_proj.weight",
     "video.visual_alignment_layer.1.self_attn.q_proj.weight"),
    ("visual_encoder.position_embedding", "video.position_embedding"),
    ("visual_encoder.clip.vision_model.encoder.layers.0.mlp.fc1.bias", "video.clip.encoder.layers.0.mlp.fc1.bias"),
    ("visual_llm_project.weight", "video.visual_llm_project.weight"),
    ("audio_encoder.audio_alignment_layer.0.feed_forward.output_dense.weight",
     "audio.audio_alignment_layer.0.feed_forward.output_dense.weight"),
    ("audio_encoder.audio_encoder.feature_projection.projection.weight",
     "audio.hubert.feature_projection.projection.weight"),
    ("audio_llm_project.bias", "audio.audio_llm_project.bias"),
    ("llm_model.base_model.model.model.layers.3.self_attn.v_proj.lora_B.default.weight",
     "llm.model.layers.3.self_attn.v_proj.lora_B.default.weight"),
    ("visual_encoder.temporal_disc_head.0.weight", None),
    ("visual_encoder.clip.text_model.embeddings.token_embedding.weight", None),
    ("audio_encoder.audio_project.weight", None),
])
def test_rename_table(released: str, ours: str | None) -> None:
    assert rename(released) == ours


def test_released_checkpoint_loads_with_nothing_missing(tiny: dict[str, Any], sources: Any,
                                                        front_ends: tuple[Any, Any]) -> None:
    sd = read_state_dict(tiny["checkpoint"])
    rep_fe, rep_llm = sources.report["front_ends"], sources.report["llm"]
    assert rep_fe["missing"] == 0 and rep_llm["missing"] == 0
    bridge_keys = [k for k in sd if (rename(k) or "").startswith(TRAINED_PREFIXES)]
    assert len(bridge_keys) > 0 and rep_fe["used"] == len(bridge_keys)
    lora_keys = [k for k in sd if ".lora_" in k]
    assert rep_llm["lora_merged"] * 2 == len(lora_keys) == 2 * 3 * 2  # 2 layers x q/k/v x A/B
    assert rep_fe["ignored_by_reason"]["training-only"] == sum(k.startswith(TRAINING_ONLY) for k in sd)
    frozen = sum(k.startswith(("visual_encoder.clip.vision_model.", "audio_encoder.audio_encoder.")) for k in sd)
    assert rep_fe["ignored_by_reason"]["identical frozen copy"] == frozen
    # the weights really landed
    video, audio = front_ends
    assert torch.equal(video.position_embedding, sd["visual_encoder.position_embedding"])
    assert torch.equal(audio.audio_alignment_layer[1].final_layer_norm.weight,
                       sd["audio_encoder.audio_alignment_layer.1.final_layer_norm.weight"])
    assert torch.equal(video.visual_llm_project.bias, sd["visual_llm_project.bias"])


def test_bare_wrapped_and_safetensors_read_alike(tiny: dict[str, Any], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    wrapped = read_state_dict(tiny["checkpoint"])
    torch.save(wrapped, tmp_path / "bare.pth")
    save_file({k: v.contiguous() for k, v in wrapped.items()}, str(tmp_path / "x.safetensors"))
    for other in (read_state_dict(tmp_path / "bare.pth"), read_state_dict(tmp_path / "x.safetensors")):
        assert other.keys() == wrapped.keys()
        assert all(torch.equal(other[k], wrapped[k]) for k in wrapped)


def test_unreadable_checkpoint_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="xemogpt.checkpoint"):
        read_state_dict(bad)
    with pytest.raises(ModelError, match="xemogpt.checkpoint: file not found"):
        read_state_dict(tmp_path / "absent.ckpt")


def test_shape_mismatch_is_refused_naming_the_key(tiny: dict[str, Any], sources: Any) -> None:
    front, _ = split_llm(read_state_dict(tiny["checkpoint"]))
    video, audio = sources.build_modules()
    bad = dict(front)
    bad["audio_encoder.audio_alignment_layer.0.attention.q_proj.weight"] = torch.zeros(8, 8)
    with pytest.raises(CheckpointMismatch, match=r"audio_encoder\.audio_alignment_layer\.0\.attention\.q_proj"):
        apply_checkpoint(bad, video, audio, None, 4, 8)
    bad = dict(front)
    bad["visual_llm_project.weight"] = torch.zeros(10, front["visual_llm_project.weight"].shape[1])
    with pytest.raises(CheckpointMismatch, match="visual_llm_project.weight"):
        apply_checkpoint(bad, video, audio, None, 4, 8)


def test_missing_bridge_weights_are_refused(tiny: dict[str, Any], sources: Any) -> None:
    front, _ = split_llm(read_state_dict(tiny["checkpoint"]))
    video, audio = sources.build_modules()
    del front["visual_encoder.visual_alignment_layer.1.mlp.fc2.weight"]
    with pytest.raises(CheckpointMismatch, match=r"video\.visual_alignment_layer\.1\.mlp\.fc2\.weight"):
        apply_checkpoint(front, video, audio, None, 4, 8)


def test_differing_frozen_copy_is_used_and_reported(tiny: dict[str, Any], sources: Any) -> None:
    front, _ = split_llm(read_state_dict(tiny["checkpoint"]))
    video, audio = sources.build_modules()
    key = "visual_encoder.clip.vision_model.post_layernorm.weight"
    front[key] = front[key] + 1.0
    report = apply_checkpoint(front, video, audio, None, 4, 8)
    assert report.replaced_frozen == [key]
    assert torch.equal(video.clip.post_layernorm.weight, front[key])


def _hf_llm(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_lora_merge_equals_the_unmerged_low_rank_forward(tiny: dict[str, Any]) -> None:
    _, llm_sd = split_llm(read_state_dict(tiny["checkpoint"]))
    r, alpha = tiny["lora_r"], tiny["lora_alpha"]
    base, merged = _hf_llm(tiny["llm"]), _hf_llm(tiny["llm"])
    report = apply_checkpoint(llm_sd, None, None, merged, r, alpha)
    assert len(report.lora_merged) == 6
    # the unmerged model: base layers plus the PEFT low-rank path B(A(x)) * alpha / r, as forward hooks
    modules = dict(base.named_modules())
    hooks = []
    for name in report.lora_merged:
        a = llm_sd[f"llm_model.base_model.model.{name}.lora_A.default.weight"]
        b = llm_sd[f"llm_model.base_model.model.{name}.lora_B.default.weight"]

        def hook(_m: Any, inp: tuple[torch.Tensor], out: torch.Tensor, a: torch.Tensor = a,
                 b: torch.Tensor = b) -> torch.Tensor:
            return out + (inp[0] @ a.T @ b.T) * (alpha / r)

        hooks.append(modules[name].register_forward_hook(hook))
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():
        want = base(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        for h in hooks:
            h.remove()
        plain = base(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-3  # the deltas are not negligible: the test can fail


def test_lora_rank_must_match_settings(tiny: dict[str, Any]) -> None:
    _, llm_sd = split_llm(read_state_dict(tiny["checkpoint"]))
    with pytest.raises(CheckpointMismatch, match="lora_r=8"):
        apply_checkpoint(llm_sd, None, None, _hf_llm(tiny["llm"]), 8, 16)


def test_missing_paths_name_the_setting(tmp_path: Path, tiny: dict[str, Any]) -> None:
    x = XEmoGPTSettings(clip=tmp_path / "nope", hubert=tiny["hubert"], llm=tiny["llm"],
                        checkpoint=tiny["checkpoint"])
    with pytest.raises(ModelError, match="xemogpt.clip: directory not found"):
        from_checkpoint(x)
    x = XEmoGPTSettings(clip=tiny["clip"], hubert=tiny["hubert"], llm=tmp_path / "llm.gguf")
    with pytest.raises(ModelError, match="xemogpt.llm: not found"):
        from_checkpoint(x)
    x = XEmoGPTSettings(hubert=tiny["hubert"], llm=tiny["llm"])
    with pytest.raises(ModelError, match="xemogpt.clip: not set"):
        from_checkpoint(x)


def test_paths_from_environment_variables(tmp_path: Path, tiny: dict[str, Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from xemo.settings import Settings

    monkeypatch.delenv("XEMO_CONFIG", raising=False)
    monkeypatch.setenv("XEMO_PROFILE", "xemogpt")
    monkeypatch.setenv("XEMO_XEMOGPT__CLIP", str(tiny["clip"]))
    monkeypatch.setenv("XEMO_XEMOGPT__HUBERT", str(tmp_path / "missing-hubert"))
    s = Settings()
    assert s.profile == "xemogpt" and s.xemogpt.clip == Path(tiny["clip"])
    with pytest.raises(ModelError, match="xemogpt.hubert: directory not found"):
        from_checkpoint(s.xemogpt)


def test_no_checkpoint_runs_with_untrained_bridges(tiny: dict[str, Any]) -> None:
    x = XEmoGPTSettings(clip=tiny["clip"], hubert=tiny["hubert"], llm=tiny["llm"])
    src = from_checkpoint(x)
    assert "untrained" in src.report["checkpoint"] and src.llm_path == Path(tiny["llm"]) and src.tmpdir is None
    (v1, _), (v2, _) = src.build_modules(), src.build_modules()
    assert torch.equal(v1.visual_llm_project.weight, v2.visual_llm_project.weight)  # seeded

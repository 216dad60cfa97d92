"""Loading the released XEmoGPT checkpoint onto our modules: rename table, LoRA merge, used/ignored/missing report.

The released file is one PyTorch state dict of the authors' `XEmoGPT` module (bare or under "state_dict").
Our modules are named so that each released prefix maps by one line of `RENAMES` (transformers-modeling-file
style): `video.*` is VideoFrontEnd, `audio.*` is AudioFrontEnd, `llm.*` is the Hugging Face causal LM.

Policy for the parts the checkpoint may carry besides the serving weights:
- training-only heads (`TRAINING_ONLY`) are ignored;
- frozen encoder / LLM copies are compared with the weights loaded from `xemogpt.clip` / `.hubert` / `.llm`:
  identical ones are ignored (the usual case, they were frozen), differing ones are USED (the checkpoint is
  what the bridges were trained on) and logged as a warning, so a wrong encoder path cannot go unnoticed;
- PEFT LoRA deltas on q/k/v are merged: W += B @ A * alpha / r (r and alpha from settings; the rank found in
  the file must equal `xemogpt.lora_r`).
Bridge / projector / position keys that are missing or of the wrong shape are refused (CheckpointMismatch),
since serving random bridge weights would give fluent nonsense.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.errors import CheckpointMismatch, ModelError

log = logging.getLogger(__name__)

# released prefix -> our prefix (first match wins; order matters for the two "visual_encoder." lines)
RENAMES: list[tuple[str, str]] = [
    ("visual_encoder.clip.vision_model.", "video.clip."),
    ("visual_encoder.position_embedding", "video.position_embedding"),
    ("visual_encoder.visual_alignment_layer.", "video.visual_alignment_layer."),
    ("visual_llm_project.", "video.visual_llm_project."),
    ("audio_encoder.audio_encoder.", "audio.hubert."),
    ("audio_encoder.audio_alignment_layer.", "audio.audio_alignment_layer."),
    ("audio_llm_project.", "audio.audio_llm_project."),
    ("llm_model.base_model.model.", "llm."),  # PEFT wrapper around the HF causal LM
    ("llm_model.", "llm."),  # a checkpoint trained without LoRA
]

TRAINING_ONLY: tuple[str, ...] = (
    "visual_encoder.visual_project.", "visual_encoder.text_project.", "visual_encoder.attention_pooling.",
    "visual_encoder.temporal_disc_head.", "visual_encoder.frame_reconstructor.", "audio_encoder.audio_project.",
    # CLIP's text tower and contrastive heads: used by the VECB alignment loss only
    "visual_encoder.clip.text_model.", "visual_encoder.clip.text_projection.",
    "visual_encoder.clip.visual_projection.", "visual_encoder.clip.logit_scale",
    "audio_encoder.text_encoder.",
    # the learnable InfoNCE temperatures of VECB / AECB pre-training (train/heads.py)
    "visual_encoder.logit_scale", "audio_encoder.logit_scale",
)

# the weights that only the checkpoint can provide (the rest comes from the pretrained encoders and LLM)
TRAINED_PREFIXES = ("video.position_embedding", "video.visual_alignment_layer.", "video.visual_llm_project.",
                    "audio.audio_alignment_layer.", "audio.audio_llm_project.")
FROZEN_PREFIXES = ("video.clip.", "audio.hubert.", "llm.")

_LORA = re.compile(r"^llm\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


@dataclass
class LoadReport:
    used: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)  # released key -> why
    missing: list[str] = field(default_factory=list)  # our keys the checkpoint should have had
    replaced_frozen: list[str] = field(default_factory=list)  # frozen copies that differed and were used
    lora_merged: list[str] = field(default_factory=list)  # LLM modules whose weight got a LoRA delta

    def counts(self) -> dict[str, int]:
        return {"used": len(self.used), "ignored": len(self.ignored), "missing": len(self.missing),
                "replaced_frozen": len(self.replaced_frozen), "lora_merged": len(self.lora_merged)}

    def to_dict(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for why in self.ignored.values():
            reasons[why] = reasons.get(why, 0) + 1
        return {**self.counts(), "ignored_by_reason": reasons, "missing_keys": self.missing,
                "replaced_frozen_keys": self.replaced_frozen}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A bare state dict or one under "state_dict" (.ckpt/.pth/.pt/.bin via torch.load, or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"xemogpt.checkpoint: file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickles with arbitrary objects are refused on purpose (weights_only)
        raise ModelError(f"xemogpt.checkpoint: cannot read {path.name} as a plain PyTorch state dict "
                         f"({type(e).__name__}); re-save it with torch.save(state_dict)") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"xemogpt.checkpoint: {path.name} does not hold a state dict of tensors")
    return obj


def rename(key: str) -> str | None:
    """Our name for a released key, or None when it is not a serving weight (training-only or unknown)."""
    if key.startswith(TRAINING_ONLY):
        return None
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _hf_llm_key(our: str) -> str:
    """llm.<name> -> the HF model's own key; PEFT keeps the base weight as `<module>.base_layer.weight`."""
    return our[len("llm."):].replace(".base_layer.", ".")


def apply_checkpoint(sd: dict[str, torch.Tensor], video: nn.Module | None, audio: nn.Module | None,
                     llm: nn.Module | None, lora_r: int, lora_alpha: int) -> LoadReport:
    """Load `sd` (released names) into the modules in place; merge LoRA into `llm`. Returns what was done.

    A module passed as None is not loaded: its keys are reported as "not in model" and none of its keys can
    be missing (the LLM and the front ends can be loaded separately, e.g. by export/ without the LLM).
    """
    report = LoadReport()
    targets: dict[str, torch.Tensor] = {}
    for prefix, module in (("video.", video), ("audio.", audio), ("llm.", llm)):
        if module is not None:
            targets |= {prefix + k: v for k, v in module.state_dict().items()}
    lora: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}  # module -> A/B -> (released key, tensor)
    updates: dict[str, torch.Tensor] = {}

    for key, value in sd.items():
        ours = rename(key)
        if ours is None:
            report.ignored[key] = "training-only" if key.startswith(TRAINING_ONLY) else "unknown"
            continue
        m = _LORA.match(ours)
        if m:
            if llm is None:
                raise ModelError("xemogpt.llm: the checkpoint has LoRA weights, which can only be merged into a "
                                 "Hugging Face LLM dir; run `xemo convert-checkpoint` with one, then use the bundle")
            lora.setdefault(m["module"], {})[m["ab"]] = (key, value)
            continue
        if ours.startswith("llm."):
            ours = "llm." + _hf_llm_key(ours)
        target = targets.get(ours)
        if target is None:
            report.ignored[key] = "not in model"  # e.g. position_ids buffers of older transformers
            continue
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointMismatch(f"checkpoint key {key}: shape {tuple(value.shape)} does not fit the model's "
                                     f"{ours} {tuple(target.shape)}")
        if ours.startswith(TRAINED_PREFIXES):
            updates[ours] = value
            report.used.append(key)
        elif torch.equal(value.to(target.dtype), target):
            report.ignored[key] = "identical frozen copy"
        else:
            updates[ours] = value
            report.used.append(key)
            report.replaced_frozen.append(key)

    report.missing = sorted(k for k in targets if k.startswith(TRAINED_PREFIXES) and k not in updates)
    if report.missing:
        shown = ", ".join(report.missing[:5]) + (" ..." if len(report.missing) > 5 else "")
        raise CheckpointMismatch(f"checkpoint lacks {len(report.missing)} bridge/projector weights: {shown}")

    with torch.no_grad():
        for ours, value in updates.items():
            targets[ours].copy_(value.to(targets[ours].dtype))
        if llm is not None:
            _merge_lora(llm, lora, lora_r, lora_alpha, report)

    if report.replaced_frozen:
        log.warning("checkpoint: %d frozen encoder/LLM weights differ from the configured ones and were taken "
                    "from the checkpoint (first: %s)", len(report.replaced_frozen), report.replaced_frozen[0])
    log.info("checkpoint: %s", report.counts())
    return report


def _merge_lora(llm: nn.Module, lora: dict[str, dict[str, tuple[str, torch.Tensor]]], r: int, alpha: int,
                report: LoadReport) -> None:
    """W += B @ A * alpha / r for every module that has both halves."""
    if not lora:
        if r > 0:
            log.warning("checkpoint has no LoRA weights although xemogpt.lora_r=%d: serving the base LLM", r)
        return
    if r <= 0:
        raise CheckpointMismatch(f"checkpoint has LoRA weights for {len(lora)} modules but xemogpt.lora_r={r}")
    modules = dict(llm.named_modules())
    scale = alpha / r
    for name, ab in sorted(lora.items()):
        if set(ab) != {"A", "B"}:
            raise CheckpointMismatch(f"checkpoint key {name}.lora_{'A' if 'A' not in ab else 'B'}: missing "
                                     "(LoRA needs both A and B)")
        mod = modules.get(name)
        if not isinstance(mod, nn.Linear):
            raise CheckpointMismatch(f"checkpoint key {name}.lora_A: no linear layer {name} in the LLM")
        a, b = ab["A"][1].float(), ab["B"][1].float()
        if a.shape != (r, mod.in_features) or b.shape != (mod.out_features, r):
            raise CheckpointMismatch(
                f"checkpoint key {name}.lora_A/B: shapes {tuple(a.shape)}/{tuple(b.shape)} do not fit "
                f"{name} ({mod.out_features}x{mod.in_features}) with xemogpt.lora_r={r}")
        w = mod.weight
        w.copy_((w.float() + (b @ a) * scale).to(w.dtype))
        report.lora_merged.append(name)
        report.used += [ab["A"][0], ab["B"][0]]

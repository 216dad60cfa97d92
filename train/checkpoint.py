"""Training checkpoints in the released key layout: one file that `xemogpt.checkpoint` serves and training resumes.

`RUN/checkpoint.ckpt` is a dict with the released-style `state_dict` (what engines/xemogpt/checkpoint.py reads:
bridges, position embedding, projectors, PEFT LoRA under `llm_model.`, and the training-only heads, which it
ignores), plus `stage`, `step`, the optimizer state and the run manifest, all loadable with weights_only=True.
Frozen encoders and the base LLM are never written: they come from the configured directories.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.errors import CheckpointMismatch, ModelError
from engines.xemogpt.checkpoint import RENAMES, TRAINED_PREFIXES, apply_checkpoint, read_state_dict

__all__ = ["load_released", "load_run", "read_state_dict", "released_state_dict", "save", "sha256_file"]

# TrainModel prefix -> released prefix, for the heads (serving weights use the inverse of RENAMES)
HEAD_NAMES: list[tuple[str, str]] = [
    ("vecb.", "visual_encoder."),
    ("aecb.audio_project.", "audio_encoder.audio_project."),
    ("aecb.text_project.", "audio_encoder.text_encoder.text_project."),
    ("aecb.logit_scale", "audio_encoder.logit_scale"),
]
LLM_PREFIX = ("llm.", "llm_model.")  # the PEFT-wrapped LLM keeps PEFT's own key names below it


def released_key(key: str) -> str | None:
    """The released name of one of our keys that a checkpoint carries; None for frozen weights."""
    if key.startswith(TRAINED_PREFIXES):
        for old, new in RENAMES:
            if not new.startswith("llm.") and key.startswith(new):
                return old + key[len(new):]
    for ours, released in HEAD_NAMES:
        if key.startswith(ours):
            return released + key[len(ours):]
    if key.startswith(LLM_PREFIX[0]) and ".lora_" in key:
        return LLM_PREFIX[1] + key[len(LLM_PREFIX[0]):]
    return None


def released_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Bridges, projectors, heads and LoRA of a TrainModel under their released names (fp32, on CPU)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        name = released_key(key)
        if name is not None:
            out[name] = value.detach().float().cpu().clone()
    return out


def load_released(model: nn.Module, sd: dict[str, torch.Tensor], lora_r: int, lora_alpha: int,
                  require_heads: bool) -> dict[str, Any]:
    """Load a released-layout state dict into a TrainModel: serving weights through the serving loader (which
    refuses missing or mis-shaped bridge weights), heads and LoRA by name. Returns what was loaded."""
    front = {k: v for k, v in sd.items() if not k.startswith(LLM_PREFIX[1])}
    lora = {k: v for k, v in sd.items() if k.startswith(LLM_PREFIX[1]) and ".lora_" in k}
    video, audio = getattr(model, "video", None), getattr(model, "audio", None)
    report = apply_checkpoint(front, video, audio, None, lora_r, lora_alpha)
    own = model.state_dict()
    heads: dict[str, torch.Tensor] = {}
    missing_heads: list[str] = []
    for key, target in own.items():
        if not key.startswith(tuple(o for o, _ in HEAD_NAMES)):
            continue
        name = released_key(key)
        assert name is not None
        if name not in sd:
            missing_heads.append(name)
            continue
        if tuple(sd[name].shape) != tuple(target.shape):
            raise CheckpointMismatch(f"checkpoint key {name}: shape {tuple(sd[name].shape)} does not fit the "
                                     f"training head {key} {tuple(target.shape)} (train.embed_dim?)")
        heads[key] = sd[name]
    if require_heads and missing_heads:
        raise CheckpointMismatch(f"checkpoint lacks {len(missing_heads)} training heads: {missing_heads[:3]}")
    loaded_lora: dict[str, torch.Tensor] = {}
    if lora and "llm" in dict(model.named_children()):
        for name, value in lora.items():
            key = LLM_PREFIX[0] + name[len(LLM_PREFIX[1]):]
            if key not in own:
                raise CheckpointMismatch(f"checkpoint key {name}: no such LoRA weight in the model "
                                         "(train.lora_targets or the LLM differ)")
            if tuple(value.shape) != tuple(own[key].shape):
                raise CheckpointMismatch(f"checkpoint key {name}: shape {tuple(value.shape)} does not fit "
                                         f"{tuple(own[key].shape)} (xemogpt.lora_r={lora_r})")
            loaded_lora[key] = value
    with torch.no_grad():
        for key, value in {**heads, **loaded_lora}.items():
            own[key].copy_(value.to(own[key].dtype))
    return {"serving": report.counts(), "heads": len(heads), "heads_missing": len(missing_heads),
            "lora": len(loaded_lora)}


def save(path: Path, model: nn.Module, stage: str, step: int, optimizer: torch.optim.Optimizer | None,
         manifest: dict[str, Any]) -> None:
    """Write atomically (a crash mid-save leaves the previous checkpoint intact)."""
    obj: dict[str, Any] = {"state_dict": released_state_dict(model), "stage": stage, "step": step,
                           "manifest": manifest}
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_run(path: Path) -> dict[str, Any]:
    """A training checkpoint written by save() (weights_only: no code runs while reading it)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"cannot read the training checkpoint {path.name}: {type(e).__name__}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict) or "stage" not in obj:
        raise ModelError(f"{path.name} is not a checkpoint written by `xemo train`")
    return obj


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

"""The PyTorch front ends to export, built by engines.xemogpt from the configured encoders and checkpoint/bundle.

What is exported is exactly what the torch runtime serves (the same VideoFrontEnd / AudioFrontEnd assembly).
The LLM is not loaded or merged here: the token width comes from the projector weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from engines.errors import ModelError
from xemo.settings import Settings

SAMPLE_RATE = 16000


@dataclass
class TorchFrontEnds:
    video: nn.Module
    audio: nn.Module
    contract: dict[str, int]  # num_frames, image_size, dim, sample_rate
    sources: dict[str, Path | None]  # weight source name -> path (hashed into the manifest)


def weight_sources(settings: Settings) -> dict[str, Path | None]:
    """The weight files the runtime checks against the manifest (the keys engines.xemogpt's Sources uses)."""
    x = settings.xemogpt
    return {"clip": x.clip, "hubert": x.hubert, "checkpoint": x.checkpoint}


def expected_contract(num_frames: int, image_size: int, dim: int) -> dict[str, int]:
    return {"num_frames": num_frames, "image_size": image_size, "dim": dim, "sample_rate": SAMPLE_RATE}


def load_torch_front_ends(settings: Settings) -> TorchFrontEnds:
    from engines.xemogpt.checkpoint import read_state_dict
    from engines.xemogpt.model import build_front_ends, image_size_of, require, split_llm

    x = settings.xemogpt
    if x.bundle is not None:
        from engines.xemogpt.bundle import from_bundle

        src = from_bundle(x)  # cheap: encoders + bridges, the LLM is only a path
        video, audio = src.build_modules()
        return TorchFrontEnds(
            video.eval(), audio.eval(), expected_contract(x.num_frames, src.image_size, src.llm_hidden), {}
        )
    clip_dir, hubert_dir, ckpt = require(x, "clip"), require(x, "hubert"), require(x, "checkpoint", "file")
    front_sd, _ = split_llm(read_state_dict(ckpt))
    proj = front_sd.get("visual_llm_project.weight")
    if proj is None:
        raise ModelError("xemogpt.checkpoint has no visual_llm_project.weight: not an XEmoGPT checkpoint")
    dim = int(proj.shape[0])
    video, audio = build_front_ends(clip_dir, hubert_dir, dim, x.num_frames, front_sd, x.lora_r, x.lora_alpha)
    return TorchFrontEnds(
        video.eval(),
        audio.eval(),
        expected_contract(x.num_frames, image_size_of(clip_dir), dim),
        {"clip": clip_dir, "hubert": hubert_dir, "checkpoint": ckpt},
    )

"""The PyTorch front ends to export, built from the configured CLIP / HuBERT dirs and XEmoGPT checkpoint.

The modules are engines.xemogpt's own `VideoFrontEnd` / `AudioFrontEnd` with the released bridge and projector
weights applied by engines.xemogpt.checkpoint, so what is exported is exactly what the torch runtime serves.
The LLM is not loaded: the token width comes from the projector weights in the checkpoint.
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
    x = settings.xemogpt
    return {"clip": x.clip, "hubert": x.hubert, "checkpoint": x.checkpoint}


def expected_contract(num_frames: int, image_size: int, dim: int) -> dict[str, int]:
    return {"num_frames": num_frames, "image_size": image_size, "dim": dim, "sample_rate": SAMPLE_RATE}


def load_torch_front_ends(settings: Settings) -> TorchFrontEnds:
    from engines.xemogpt.audio import AudioFrontEnd, load_hubert
    from engines.xemogpt.checkpoint import apply_checkpoint, read_state_dict
    from engines.xemogpt.video import VideoFrontEnd, load_clip

    x = settings.xemogpt
    missing = [k for k, v in weight_sources(settings).items() if v is None]
    if missing:
        raise ModelError(f"export needs xemogpt.{', xemogpt.'.join(missing)} in the settings")
    assert x.clip is not None and x.hubert is not None and x.checkpoint is not None
    sd = read_state_dict(x.checkpoint)
    proj = sd.get("visual_llm_project.weight")
    if proj is None:
        raise ModelError("xemogpt.checkpoint has no visual_llm_project.weight: not an XEmoGPT checkpoint")
    dim = int(proj.shape[0])
    clip, _ = load_clip(x.clip)
    hubert, _ = load_hubert(x.hubert)
    video = VideoFrontEnd(clip, dim, num_frames=x.num_frames)
    audio = AudioFrontEnd(hubert, dim)
    # The LLM's LoRA weights are merged by the LLM loader, not needed here.
    apply_checkpoint({k: v for k, v in sd.items() if not k.startswith("llm_model.")}, video, audio, None,
                     x.lora_r, x.lora_alpha)
    contract = expected_contract(x.num_frames, int(clip.config.image_size), dim)
    return TorchFrontEnds(video.eval(), audio.eval(), contract, weight_sources(settings))

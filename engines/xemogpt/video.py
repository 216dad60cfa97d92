"""The video front end: 16 frames -> CLIP vision tower [CLS] -> + temporal position -> VECB -> 16 LLM tokens.

`VideoFrontEnd` is the unit that export/ compiles to ONNX / TensorRT (fixed contract, no data-dependent Python
control flow); `frames_to_pixel_values` is the preprocessing both the torch and the exported paths share.
Attribute names follow the released checkpoint (see checkpoint.RENAMES).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class VideoFrontEnd(nn.Module):
    """forward(pixel_values (B, T, 3, H, W) float) -> (B, T, D_llm); T is the released 16 frames."""

    def __init__(self, clip: nn.Module, llm_hidden: int, num_frames: int = 16, num_layers: int = 2) -> None:
        from transformers.models.clip.modeling_clip import CLIPEncoderLayer

        super().__init__()
        cfg = clip.config
        self.clip = clip  # CLIPVisionModel (frozen)
        self.num_frames = num_frames
        # VECB: learnable temporal position embedding + 2 CLIP encoder layers of the tower's own config
        self.position_embedding = nn.Parameter(torch.zeros(1, num_frames, cfg.hidden_size))
        self.visual_alignment_layer = nn.ModuleList([CLIPEncoderLayer(cfg) for _ in range(num_layers)])
        self.visual_llm_project = nn.Linear(cfg.hidden_size, llm_hidden)

    @property
    def hidden_size(self) -> int:
        return self.clip.config.hidden_size

    def frame_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per-frame [CLS] of the last hidden state (before post-layernorm): (B, T, C)."""
        b, t = pixel_values.shape[0], pixel_values.shape[1]
        out = self.clip(pixel_values=pixel_values.flatten(0, 1))
        return out.last_hidden_state[:, 0].reshape(b, t, -1)

    def bridge(self, feats: torch.Tensor) -> torch.Tensor:
        """VECB over the frame vectors (no mask: every clip has exactly `num_frames`)."""
        h = feats + self.position_embedding[:, : feats.shape[1]]
        for layer in self.visual_alignment_layer:
            out = layer(h, None)
            h = out[0] if isinstance(out, tuple) else out  # transformers 4.x returned a tuple
        return h

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_llm_project(self.bridge(self.frame_features(pixel_values)))


def load_clip(path: Path) -> tuple[nn.Module, Any]:
    """The CLIP vision tower (from a CLIPModel or CLIPVisionModel dir) and its image processor."""
    from transformers import AutoImageProcessor, CLIPVisionModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a CLIPModel dir also holds the text tower: expected, not news
    try:
        model = CLIPVisionModel.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
        processor = AutoImageProcessor.from_pretrained(path)  # torchvision-backed when installed, else PIL
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval(), processor


def select_frames(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """Exactly `num_frames` frames, uniformly over what ingest sampled (ingest already samples the whole clip
    uniformly; this only adapts when its frame count differs from the model's 16)."""
    if len(frames) == num_frames:
        return frames
    idx = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    return frames[idx]


def frames_to_pixel_values(processor: Any, clips: list[np.ndarray], num_frames: int = 16) -> torch.Tensor:
    """RGB uint8 frame stacks (N, H, W, 3), one per clip -> (B, num_frames, 3, 224, 224) float32, with the
    CLIP image processor (resize shortest edge, center crop, normalise)."""
    out = []
    for frames in clips:
        sel = select_frames(np.asarray(frames), num_frames)
        pv = processor(images=list(sel), return_tensors="pt")["pixel_values"]
        out.append(pv.to(torch.float32))
    return torch.stack(out)

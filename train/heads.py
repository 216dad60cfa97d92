"""The training-only heads of the cue bridges, with the attribute names of the released checkpoint.

VECB (stage 1): `attention_pooling` over the 16 bridged frames, `visual_project` / `text_project` into the shared
contrastive space, `temporal_disc_head` (real vs. shuffled frame order) and `frame_reconstructor` (masked frame
modelling). AECB (stage 2): `audio_project` and the sentence encoder's `text_project`. Each head set also holds
its learnable InfoNCE temperature (`logit_scale`, CLIP's parametrisation). Serving ignores all of them.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class AttentionPooling(nn.Module):
    """softmax(x @ v) over time, then the weighted sum: (B, T, C) -> (B, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        # scaled so the initial weights are near uniform whatever the width (1024 for ViT-L)
        self.attn_vector = nn.Parameter(torch.randn(dim) / math.sqrt(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(x @ self.attn_vector.to(x.dtype), dim=1)
        return (w.unsqueeze(-1) * x).sum(dim=1)


def _logit_scale(temperature: float) -> nn.Parameter:
    return nn.Parameter(torch.tensor(math.log(1.0 / temperature)))


class VECBHeads(nn.Module):
    def __init__(self, hidden: int, text_dim: int, embed_dim: int, temperature: float, attention_pooling: bool) -> None:
        super().__init__()
        self.attention_pooling = AttentionPooling(hidden) if attention_pooling else None
        self.visual_project = nn.Linear(hidden, embed_dim)
        self.text_project = nn.Linear(text_dim, embed_dim)
        self.temporal_disc_head = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))
        self.frame_reconstructor = nn.Linear(hidden, hidden)
        self.logit_scale = _logit_scale(temperature)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=1) if self.attention_pooling is None else self.attention_pooling(h)

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """Bridged frames (B, T, C) -> the clip's vector in the contrastive space (B, E)."""
        return self.visual_project(self.pool(h))


class AECBHeads(nn.Module):
    def __init__(self, hidden: int, text_dim: int, embed_dim: int, temperature: float) -> None:
        super().__init__()
        self.audio_project = nn.Linear(hidden, embed_dim)
        self.text_project = nn.Linear(text_dim, embed_dim)
        self.logit_scale = _logit_scale(temperature)

    def embed(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Bridged frames (B, F, C) with their mask -> masked mean -> (B, E)."""
        m = valid.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return self.audio_project(pooled)

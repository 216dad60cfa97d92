"""The three stages' losses, computed on a TrainModel from one (per-process) batch.

Stage 1 (VECB): symmetric InfoNCE between the attention-pooled bridge output and CLIP's text embedding of the
short caption; temporal order (the frames of a share of the clips are shuffled BEFORE the temporal position
embedding is added, so only order can tell them apart) with a binary head; masked frame modelling (zeroed frames,
MSE against their CLIP [CLS] features on the masked positions only). Stage 2 (AECB): InfoNCE between the
masked-mean-pooled bridge output and the sentence encoder's embedding. Stage 3: causal-LM loss on the description
after the released prompt (train/instruct.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from train.distributed import gather_cat, scaled_mean

MAX_LOGIT_SCALE = 100.0  # CLIP's cap on exp(logit_scale)


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over matched rows of two (N, E) sets, L2-normalised here."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = logit_scale.float().exp().clamp(max=MAX_LOGIT_SCALE) * a @ b.T
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def vecb_loss(m: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    feats = m.video_features(batch["samples"])  # (B, T, C), frozen
    b, _, c = feats.shape
    shuffled = torch.gather(feats, 1, batch["perm"].to(feats.device)[..., None].expand(-1, -1, c))
    mask = batch["mask"].to(feats.device)
    masked = feats.masked_fill(mask[..., None], 0.0)
    h_orig, h_shuf, h_mask = m.video.bridge(torch.cat([feats, shuffled, masked])).split(b)
    w = m.settings.train.vecb_weights
    nce = info_nce(gather_cat(m.vecb.embed(h_orig)), gather_cat(m.vecb.text_project(batch["text"])),
                   m.vecb.logit_scale)
    logit = m.vecb.temporal_disc_head(m.vecb.embed(h_shuf)).squeeze(-1).float()
    order = scaled_mean(F.binary_cross_entropy_with_logits(
        logit, batch["permuted"].to(logit.device).float(), reduction="sum"), b)
    err = (m.vecb.frame_reconstructor(h_mask).float() - feats).pow(2).mean(-1)
    mfm = scaled_mean(err[mask].sum(), mask.sum())
    loss = w.contrastive * nce + w.temporal * order + w.masked_frame * mfm
    return {"loss": loss, "contrastive": nce, "temporal": order, "masked_frame": mfm}


def aecb_loss(m: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    feats, valid = m.audio_features(batch["samples"])
    h = m.audio.bridge(feats, valid)
    nce = info_nce(gather_cat(m.aecb.embed(h, valid)), gather_cat(m.aecb.text_project(batch["text"])),
                   m.aecb.logit_scale)
    return {"loss": nce, "contrastive": nce}


def instruct_loss(m: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    from train.instruct import lm_loss

    return lm_loss(m, batch)


LOSSES: dict[str, Callable[[Any, dict[str, Any]], dict[str, torch.Tensor]]] = {
    "stage1": vecb_loss, "stage2": aecb_loss, "stage3": instruct_loss,
}


def stage1_randomness(global_batch: int, num_frames: int, permute_prob: float, mask_prob: float,
                      seed: int, step: int) -> dict[str, torch.Tensor]:
    """Shuffles and masks for a whole global batch, from (seed, step) alone: each process slices its rows, so
    a resumed or a distributed run draws what one uninterrupted single-process run draws."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    permuted = torch.rand(global_batch, generator=g) < permute_prob
    ident = torch.arange(num_frames)
    perms = []
    for k in range(global_batch):
        p = torch.randperm(num_frames, generator=g)
        if torch.equal(p, ident):
            p = ident.roll(1)
        perms.append(p if permuted[k] else ident)
    mask = torch.rand(global_batch, num_frames, generator=g) < mask_prob
    return {"perm": torch.stack(perms), "permuted": permuted, "mask": mask}

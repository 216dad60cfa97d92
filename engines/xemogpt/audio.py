"""The audio front end: 16 kHz waveform (first 12 s) -> HuBERT -> AECB with key-padding mask -> LLM tokens.

`AudioFrontEnd` is the unit export/ compiles (fixed contract: it returns every frame plus a validity mask;
dropping the invalid frames happens outside, so the module has no data-dependent shapes).
`waveforms_to_inputs` is the preprocessing both the torch and the exported paths share.
Attribute names follow the released checkpoint (see checkpoint.RENAMES).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
MIN_SAMPLES = 400  # HuBERT's conv stack needs 25 ms for one frame; shorter audio gives no token


class AudioFrontEnd(nn.Module):
    """forward(input_values (B, T), attention_mask (B, T) int64) -> (tokens (B, F, D_llm), valid (B, F) bool)."""

    def __init__(self, hubert: nn.Module, llm_hidden: int, num_layers: int = 2) -> None:
        from transformers.models.hubert.modeling_hubert import HubertEncoderLayer

        super().__init__()
        cfg = hubert.config
        self.hubert = hubert  # HubertModel (frozen)
        # AECB: the plain post-norm HubertEncoderLayer, as released, even though HuBERT-Large is stable-layer-norm
        self.audio_alignment_layer = nn.ModuleList([HubertEncoderLayer(cfg) for _ in range(num_layers)])
        self.audio_llm_project = nn.Linear(cfg.hidden_size, llm_hidden)

    @property
    def hidden_size(self) -> int:
        return self.hubert.config.hidden_size

    def frame_mask(self, attention_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Valid HuBERT frames per sample (B, F) bool, from the sample-level mask (no Python branching)."""
        lengths = self.hubert._get_feat_extract_output_lengths(attention_mask.sum(-1))
        frames = torch.arange(num_frames, device=attention_mask.device)
        return frames[None, :] < lengths[:, None]

    def encode(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HuBERT last hidden state with padded frames zeroed, and the frame mask."""
        h = self.hubert(input_values, attention_mask=attention_mask).last_hidden_state
        valid = self.frame_mask(attention_mask, h.shape[1])
        return h * valid[..., None].to(h.dtype), valid

    def bridge(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # additive key-padding mask, broadcast over heads and queries (the released code expands it to FxF)
        bias = (~valid)[:, None, None, :].to(h.dtype) * torch.finfo(h.dtype).min
        for layer in self.audio_alignment_layer:
            out = layer(h, attention_mask=bias)
            h = out[0] if isinstance(out, tuple) else out  # transformers 4.x returned a tuple
        return h * valid[..., None].to(h.dtype)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, valid = self.encode(input_values, attention_mask)
        return self.audio_llm_project(self.bridge(h, valid)), valid


def load_hubert(path: Path) -> tuple[nn.Module, Any]:
    """HuBERT and its Wav2Vec2 feature extractor (padding + attention mask)."""
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    model = HubertModel.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(path)
    return model.eval(), extractor


def waveforms_to_inputs(extractor: Any, waves: list[np.ndarray], max_s: float = 12.0,
                        sample_rate: int = SAMPLE_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono float waveforms at 16 kHz -> (input_values (B, T) float32, attention_mask (B, T) int64), each cut
    to its first `max_s` seconds and padded to the longest (the released preprocessing)."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"audio must be {SAMPLE_RATE} Hz, got {sample_rate}")
    cut = [np.asarray(w, dtype=np.float32)[: int(max_s * SAMPLE_RATE)] for w in waves]
    feats = extractor(cut, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True,
                      return_tensors="pt")
    return feats["input_values"].to(torch.float32), feats["attention_mask"].to(torch.int64)

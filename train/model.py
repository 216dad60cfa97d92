"""The model being trained: the serving front ends (engines/xemogpt) + one stage's training heads + PEFT LoRA.

`build(settings, stage, device)` loads what a stage needs, and nothing more: stage 1 the CLIP vision tower and its
text tower (frozen), stage 2 HuBERT and the sentence encoder (frozen), stage 3 both encoders and the LLM with LoRA
on q/k/v. The modality a stage does not run keeps its bridge and projector (built from the encoder's config, so
every checkpoint carries all serving weights) but not its encoder. Frozen-encoder outputs are cached per clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engines.errors import ModelError
from engines.xemogpt.audio import AudioFrontEnd, load_hubert, waveforms_to_inputs
from engines.xemogpt.model import load_processors, pad_id_of, quiet_transformers, require
from engines.xemogpt.video import VideoFrontEnd, frames_to_pixel_values, load_clip
from train.data import Sample
from train.heads import AECBHeads, VECBHeads
from xemo.settings import Settings

VIDEO_STAGES, AUDIO_STAGES = ("stage1", "stage3"), ("stage2", "stage3")


class FeatureCache:
    """Frozen-encoder outputs per (kind, sample id), on the CPU, up to a byte budget (then it stops adding)."""

    def __init__(self, budget_mb: int) -> None:
        self.budget = budget_mb * 1024 * 1024
        self.used = 0
        self.items: dict[tuple[str, str], torch.Tensor] = {}

    def get(self, key: tuple[str, str]) -> torch.Tensor | None:
        return self.items.get(key)

    def put(self, key: tuple[str, str], value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if self.used + size <= self.budget:
            self.items[key] = value.detach().cpu()
            self.used += size


class TrainModel(nn.Module):
    """Attribute names are the serving ones (video.*, audio.*) plus vecb.* / aecb.* / llm.* (train/checkpoint.py)."""

    def __init__(self, stage: str, video: VideoFrontEnd, audio: AudioFrontEnd, vecb: VECBHeads | None,
                 aecb: AECBHeads | None, llm: nn.Module | None, settings: Settings) -> None:
        super().__init__()
        self.stage = stage
        self.video, self.audio = video, audio
        if vecb is not None:
            self.vecb = vecb
        if aecb is not None:
            self.aecb = aecb
        if llm is not None:
            self.llm = llm
        self.settings = settings
        self.cache = FeatureCache(settings.train.feature_cache_mb)
        self.image_processor: Any = None
        self.feature_extractor: Any = None
        self.tokenizer: Any = None
        self.pad_id = 0
        self.frozen_dtype = torch.float32

    @property
    def device(self) -> torch.device:
        return self.video.visual_llm_project.weight.device

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        from train import objectives

        return objectives.LOSSES[self.stage](self, batch)

    # -- frozen encoders ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def video_features(self, samples: list[Sample]) -> torch.Tensor:
        """CLIP [CLS] per frame (B, T, C) float32, through the serving preprocessing and tower (media are read
        only for clips not in the cache)."""
        out: list[torch.Tensor | None] = [self.cache.get(("v", s.id)) for s in samples]
        todo = [k for k, f in enumerate(out) if f is None]
        if todo:
            frames = [samples[k].load()[0] for k in todo]
            pv = frames_to_pixel_values(self.image_processor, frames, self.video.num_frames)  # type: ignore[arg-type]
            feats = self.video.frame_features(pv.to(self.device, self.frozen_dtype)).float()
            for j, k in enumerate(todo):
                out[k] = feats[j]
                self.cache.put(("v", samples[k].id), feats[j])
        return torch.stack([f.to(self.device) for f in out if f is not None]).float()

    @torch.no_grad()
    def audio_features(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """HuBERT last hidden state of each clip's valid frames, padded: (B, F, C) float32 and (B, F) bool.

        Each clip runs alone (no padding inside HuBERT), so a cached clip is the same whatever its batch."""
        rows: list[torch.Tensor] = []
        for s in samples:
            h = self.cache.get(("a", s.id))
            if h is None:
                wave = s.load()[1]
                iv, am = waveforms_to_inputs(self.feature_extractor, [wave], self.settings.xemogpt.max_audio_s)
                hh, valid = self.audio.encode(iv.to(self.device, self.frozen_dtype), am.to(self.device))
                h = hh[0][valid[0]].float()
                self.cache.put(("a", s.id), h)
            rows.append(h.to(self.device))
        n = max(r.shape[0] for r in rows)
        feats = torch.zeros(len(rows), n, rows[0].shape[1], device=self.device)
        valid = torch.zeros(len(rows), n, dtype=torch.bool, device=self.device)
        for k, r in enumerate(rows):
            feats[k, : r.shape[0]] = r
            valid[k, : r.shape[0]] = True
        return feats, valid

    # -- what trains --------------------------------------------------------------------------------------------

    def set_trainable(self) -> list[str]:
        """Freeze everything, then unfreeze what this stage trains; returns the trainable names."""
        self.requires_grad_(False)
        t = self.settings.train
        prefixes: list[str] = []
        if self.stage == "stage1":
            prefixes = ["video.position_embedding", "video.visual_alignment_layer.", "vecb."]
        elif self.stage == "stage2":
            prefixes = ["audio.audio_alignment_layer.", "aecb."]
        else:
            prefixes = ["video.visual_llm_project.", "audio.audio_llm_project."]
            if "video" in t.stage3_trained_bridges:
                prefixes += ["video.position_embedding", "video.visual_alignment_layer."]
            if "audio" in t.stage3_trained_bridges:
                prefixes.append("audio.audio_alignment_layer.")
        names = []
        for name, p in self.named_parameters():
            if name.startswith(tuple(prefixes)) or (self.stage == "stage3" and ".lora_" in name):
                p.requires_grad_(True)
                names.append(name)
        return names

    def train(self, mode: bool = True) -> TrainModel:
        super().train(mode)
        for enc in (self.video.clip, self.audio.hubert):  # frozen encoders never use dropout
            if enc is not None:
                enc.eval()
        return self


class TextTower:
    """A frozen text encoder for the contrastive stages: texts -> (N, D) float32, cached by text."""

    def __init__(self, encode: Any, dim: int) -> None:
        self._encode = encode
        self.dim = dim
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def features(self, texts: list[str], device: torch.device) -> torch.Tensor:
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            self._cache.update(zip(todo, self._encode(todo), strict=True))
        return torch.stack([self._cache[t] for t in texts]).to(device)


def clip_text_tower(clip_dir: Any, device: torch.device) -> TextTower:
    """CLIP's own text tower (text_model + text_projection), frozen; captions cut to its context."""
    from transformers import AutoTokenizer, CLIPTextModelWithProjection
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the dir also holds the vision tower: expected
    try:
        model = CLIPTextModelWithProjection.from_pretrained(clip_dir, dtype=torch.float32).eval().to(device)
        tok = AutoTokenizer.from_pretrained(clip_dir)
    except (OSError, ValueError) as e:
        raise ModelError(f"xemogpt.clip: stage 1 needs CLIP's text tower and tokenizer in {clip_dir}: {e}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    max_len = min(77, int(model.config.max_position_embeddings))

    def encode(texts: list[str]) -> list[torch.Tensor]:
        b = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt").to(device)
        return list(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).text_embeds.float().cpu())

    return TextTower(encode, int(model.config.projection_dim))


def sentence_tower(settings: Settings, device: torch.device) -> TextTower:
    """The sentence encoder of AECB pre-training (train.text_encoder; default the MiniLM that ships offline)."""
    from eval.embed import MiniLMEmbedder

    emb = MiniLMEmbedder(settings.train.text_encoder, device=str(device))

    def encode(texts: list[str]) -> list[torch.Tensor]:
        return list(torch.from_numpy(emb.encode(texts)).float())

    return TextTower(encode, int(emb.encode(["a"]).shape[1]))


@dataclass
class Built:
    model: TrainModel
    text: TextTower | None  # stages 1-2


def _config_only(cls: Any, path: Any) -> Any:
    """An encoder with its config and no weights (meta device): enough to size a bridge."""
    cfg = cls.config_class.from_pretrained(path)
    with torch.device("meta"):
        return cls(cfg)


def build(settings: Settings, stage: str, device: torch.device, bf16: bool) -> Built:
    from transformers import AutoConfig, CLIPVisionModel, HubertModel

    quiet_transformers()
    x, t = settings.xemogpt, settings.train
    clip_dir, hubert_dir, llm_dir = require(x, "clip"), require(x, "hubert"), require(x, "llm")
    llm_hidden = int(AutoConfig.from_pretrained(llm_dir).hidden_size)
    clip = load_clip(clip_dir)[0] if stage in VIDEO_STAGES else _config_only(CLIPVisionModel, clip_dir)
    hubert = load_hubert(hubert_dir)[0] if stage in AUDIO_STAGES else _config_only(HubertModel, hubert_dir)
    with torch.random.fork_rng():
        torch.manual_seed(t.seed)
        video = VideoFrontEnd(clip, llm_hidden, num_frames=x.num_frames)
        torch.manual_seed(t.seed + 1)
        audio = AudioFrontEnd(hubert, llm_hidden)
    if stage not in VIDEO_STAGES:
        video.clip = None  # type: ignore[assignment]
    if stage not in AUDIO_STAGES:
        audio.hubert = None  # type: ignore[assignment]
    text: TextTower | None = None
    vecb = aecb = None
    llm = tok = None
    with torch.random.fork_rng():
        torch.manual_seed(t.seed + 2)
        if stage == "stage1":
            text = clip_text_tower(clip_dir, device)
            vecb = VECBHeads(clip.config.hidden_size, text.dim, t.embed_dim, t.temperature_init, t.attention_pooling)
        elif stage == "stage2":
            text = sentence_tower(settings, device)
            aecb = AECBHeads(hubert.config.hidden_size, text.dim, t.embed_dim, t.temperature_init)
        else:
            llm, tok = _lora_llm(settings, llm_dir, bf16)
    model = TrainModel(stage, video, audio, vecb, aecb, llm, settings)
    frozen = torch.bfloat16 if bf16 else torch.float32
    model.frozen_dtype = frozen
    for enc in (video.clip, audio.hubert):
        if enc is not None:
            enc.to(frozen)
    model.image_processor, model.feature_extractor = load_processors(clip_dir, hubert_dir)
    if tok is not None:
        model.tokenizer, model.pad_id = tok, pad_id_of(tok)
    model.to(device)
    return Built(model, text)


def _lora_llm(settings: Settings, llm_dir: Any, bf16: bool) -> tuple[nn.Module, Any]:
    """The HF causal LM (frozen, bf16 on GPUs) with PEFT LoRA on the targets (fp32 adapters)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    x, t = settings.xemogpt, settings.train
    if x.lora_r <= 0:
        raise ModelError("xemogpt.lora_r must be positive for instruction tuning (the paper uses 512)")
    try:
        base = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
        tok = AutoTokenizer.from_pretrained(llm_dir)
    except Exception as e:
        raise ModelError(f"xemogpt.llm: cannot load a Hugging Face causal LM from {llm_dir}: {e}") from None
    cfg = LoraConfig(r=x.lora_r, lora_alpha=x.lora_alpha, lora_dropout=t.lora_dropout,
                     target_modules=list(t.lora_targets), bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(base, cfg), tok
    except ValueError as e:
        raise ModelError(f"train.lora_targets: {e}") from None

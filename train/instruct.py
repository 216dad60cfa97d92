"""Stage 3: the released prompt around a clip's video and audio tokens, with the description as the target.

The prompt is engines/xemogpt/prompt.py's (the same layout and audio-token truncation the server uses), preceded
by the pad-token embedding as BOS; the labels are -100 on BOS and prompt and the description's token ids (plus
EOS) after it. The evaluations of a tuned model run the served way too: the label is the label word with the
highest log-likelihood after the label question, the description is decoded greedily up to the "###" stop.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from engines.xemogpt import prompt
from train.data import Sample
from train.distributed import scaled_mean


def modality_tokens(m: Any, samples: list[Sample]) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Projected video tokens (16, D) and audio tokens (n_valid, D) per clip (None where the clip lacks it)."""
    trained = m.settings.train.stage3_trained_bridges
    video: list[torch.Tensor | None] = [None] * len(samples)
    audio: list[torch.Tensor | None] = [None] * len(samples)
    vi = [k for k, s in enumerate(samples) if s.has_video]
    if vi:
        feats = m.video_features([samples[k] for k in vi])
        with nullcontext() if "video" in trained else torch.no_grad():
            h = m.video.bridge(feats)
        out = m.video.visual_llm_project(h)
        for j, k in enumerate(vi):
            video[k] = out[j]
    ai = [k for k, s in enumerate(samples) if s.has_audio]
    if ai:
        feats, valid = m.audio_features([samples[k] for k in ai])
        with nullcontext() if "audio" in trained else torch.no_grad():
            h = m.audio.bridge(feats, valid)
        out = m.audio.audio_llm_project(h)
        for j, k in enumerate(ai):
            audio[k] = out[j][valid[j]]
    return video, audio


def _count(m: Any) -> Any:
    return lambda s: len(m.tokenizer(s, add_special_tokens=False).input_ids)


def layout(m: Any, video: torch.Tensor | None, audio: torch.Tensor | None, subtitle: str, labels: list[str],
           budget: int) -> prompt.Prompt:
    return prompt.build(audio, video, subtitle, labels, _count(m), budget)  # type: ignore[arg-type]


def embed(m: Any, segments: list[Any]) -> torch.Tensor:
    """BOS (the pad embedding) + the segments, text embedded by the LLM: (L, H)."""
    emb = m.llm.get_input_embeddings()
    dev, dtype = emb.weight.device, emb.weight.dtype
    parts = [emb(torch.tensor([m.pad_id], device=dev))]
    for s in segments:
        if isinstance(s, str):
            ids = m.tokenizer(s, add_special_tokens=False).input_ids
            parts.append(emb(torch.tensor(ids, device=dev, dtype=torch.long)))
        else:
            parts.append(s.to(dtype))
    return torch.cat(parts)


def _pad(m: Any, seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with the pad embedding: (B, L, H) and the attention mask (B, L)."""
    emb = m.llm.get_input_embeddings()
    pad = emb(torch.tensor([m.pad_id], device=emb.weight.device))[0]
    n = max(s.shape[0] for s in seqs)
    out = pad.expand(len(seqs), n, -1).clone()
    att = torch.zeros(len(seqs), n, dtype=torch.long, device=out.device)
    for k, s in enumerate(seqs):
        out[k, : s.shape[0]] = s
        att[k, : s.shape[0]] = 1
    return out, att


def target_ids(m: Any, text: str) -> list[int]:
    eos = m.tokenizer.eos_token or ""
    ids = m.tokenizer(text + eos, add_special_tokens=False).input_ids
    return ids[: m.settings.train.max_target_tokens]


def lm_inputs(m: Any, samples: list[Sample], labels: list[str]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[dict[str, int]]]:
    """(inputs_embeds (B, L, H), attention mask (B, L), labels (B, L) with -100 on BOS, prompt and padding,
    each sample's prompt usage)."""
    video, audio = modality_tokens(m, samples)
    emb = m.llm.get_input_embeddings()
    seqs, rows, usage = [], [], []
    for k, s in enumerate(samples):
        tids = target_ids(m, s.target)
        p = layout(m, video[k], audio[k], s.subtitle, labels, m.settings.xemogpt.max_context - len(tids))
        ctx = embed(m, p.segments)
        seqs.append(torch.cat([ctx, emb(torch.tensor(tids, device=ctx.device))]))
        rows.append(torch.tensor([-100] * ctx.shape[0] + tids, device=ctx.device))
        usage.append(p.usage)
    x, att = _pad(m, seqs)
    lab = torch.full(att.shape, -100, dtype=torch.long, device=x.device)
    for k, row in enumerate(rows):
        lab[k, : row.shape[0]] = row
    return x, att, lab, usage


def lm_loss(m: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    x, att, lab, _ = lm_inputs(m, batch["samples"], batch["labels"])
    logits = m.llm(inputs_embeds=x, attention_mask=att).logits[:, :-1].float()
    tgt = lab[:, 1:]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100,
                            reduction="sum")
    loss = scaled_mean(total, (tgt != -100).sum())
    return {"loss": loss, "lm": loss}


@torch.no_grad()
def label_scores(m: Any, video: torch.Tensor | None, audio: torch.Tensor | None, subtitle: str,
                 labels: list[str]) -> dict[str, float]:
    """Summed log-likelihood of " <label>" after the label question, for each label (the served label rule)."""
    cands = [m.tokenizer(" " + lb, add_special_tokens=False).input_ids for lb in labels]
    p = layout(m, video, audio, subtitle, labels, m.settings.xemogpt.max_context - max(map(len, cands)))
    ctx = embed(m, p.label_segments)
    emb = m.llm.get_input_embeddings()
    seqs = [torch.cat([ctx, emb(torch.tensor(c, device=ctx.device))]) for c in cands]
    x, att = _pad(m, seqs)
    lp = m.llm(inputs_embeds=x, attention_mask=att).logits.float().log_softmax(-1)
    n = ctx.shape[0]
    return {lb: float(sum(lp[k, n - 1 + j, t] for j, t in enumerate(c))) for k, (lb, c) in
            enumerate(zip(labels, cands, strict=True))}


@torch.no_grad()
def describe(m: Any, video: torch.Tensor | None, audio: torch.Tensor | None, subtitle: str, labels: list[str],
             max_new_tokens: int) -> str:
    """Greedy description (cut at the released "###" stop)."""
    p = layout(m, video, audio, subtitle, labels, m.settings.xemogpt.max_context - max_new_tokens)
    x = embed(m, p.segments)[None]
    out = m.llm.generate(inputs_embeds=x, attention_mask=torch.ones(x.shape[:2], dtype=torch.long, device=x.device),
                         max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=m.pad_id)
    text = m.tokenizer.decode(out[0], skip_special_tokens=True)
    for stop in prompt.STOP:
        text = text.split(stop)[0]
    return text.strip()

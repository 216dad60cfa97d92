"""Validation rows of `RUN/metrics.jsonl`: retrieval R@1 (stages 1-2), label accuracy and EmoCue-360 (stage 3)."""

from __future__ import annotations

from typing import Any

import torch

from eval.labels import normalise_label
from train.data import Sample
from train.model import TextTower, TrainModel

BATCH = 16


@torch.no_grad()
def retrieval(m: TrainModel, text: TextTower, samples: list[Sample]) -> dict[str, Any]:
    """Clip <-> caption R@1 among the evaluated clips (each clip's own caption is the one right answer;
    identical captions count as right). Chance is 1 / n."""
    stage = m.stage
    clips, caps = [], []
    for k in range(0, len(samples), BATCH):
        chunk = samples[k: k + BATCH]
        if stage == "stage1":
            h = m.video.bridge(m.video_features(chunk))
            clips.append(m.vecb.embed(h))
            caps.append(m.vecb.text_project(text.features([s.visual_caption or "" for s in chunk], m.device)))
        else:
            feats, valid = m.audio_features(chunk)
            clips.append(m.aecb.embed(m.audio.bridge(feats, valid), valid))
            caps.append(m.aecb.text_project(text.features([s.audio_caption or "" for s in chunk], m.device)))
    a = torch.nn.functional.normalize(torch.cat(clips).float(), dim=-1)
    b = torch.nn.functional.normalize(torch.cat(caps).float(), dim=-1)
    sim = a @ b.T
    names = [s.visual_caption if stage == "stage1" else s.audio_caption for s in samples]
    same = torch.tensor([[x == y for y in names] for x in names], device=sim.device)
    v2t = same[torch.arange(len(names)), sim.argmax(1)].float().mean().item()
    t2v = same[sim.argmax(0), torch.arange(len(names))].float().mean().item()
    return {"r1_clip_to_text": v2t, "r1_text_to_clip": t2v, "r1": (v2t + t2v) / 2, "chance": 1 / len(samples),
            "n": len(samples)}


@torch.no_grad()
def instruction(m: TrainModel, samples: list[Sample], labels: list[str], max_new_tokens: int,
                embedder_path: Any = None) -> dict[str, Any]:
    """Label accuracy (served label rule) and EmoCue-360 of greedy descriptions against the reference cues."""
    from eval.embed import default_embedder
    from eval.emocue360 import score
    from eval.extract_offline import OfflineExtractor
    from train.instruct import describe, label_scores, modality_tokens

    correct = 0
    preds: dict[str, str] = {}
    for s in samples:
        video, aud = modality_tokens(m, [s])
        scores = label_scores(m, video[0], aud[0], s.subtitle, labels)
        correct += int(max(scores, key=scores.__getitem__) == normalise_label(s.emotion))
        preds[s.id] = describe(m, video[0], aud[0], s.subtitle, labels, max_new_tokens)
    emb = default_embedder(embedder_path)
    ext = OfflineExtractor(emb)
    pred_cues = {k: ext.extract(v) for k, v in preds.items()}
    ref = {s.id: s.ref_cues for s in samples if s.ref_cues}
    rep = score({k: v for k, v in pred_cues.items() if k in ref}, ref, emb)
    prf = rep.prf()
    f1s = [v["f1"] for v in prf.values() if v["f1"] is not None]
    return {"label_accuracy": correct / len(samples), "emocue360": prf,
            "emocue360_f1": sum(f1s) / len(f1s) if f1s else None, "n": len(samples),
            "example": next(iter(preds.values()), "")[:300]}

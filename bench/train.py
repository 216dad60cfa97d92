"""Training throughput (samples/s) of each stage at tiny, base and full size, random weights, synthetic clips.

Sizes (configs built in code, no download):
- tiny: tests/tiny_models.py (CLIP/HuBERT 32 wide, Qwen3 64 wide);
- base: CLIP ViT-B/16 (768 wide, 12 layers, 224 px; text tower 512 wide, 12 layers), HuBERT-Base size
  (768 wide, 12 layers), a Qwen3-0.6B-shaped LLM (1024 wide, 28 layers, vocab 151936), LoRA r 64;
- full: CLIP ViT-L/14, HuBERT-Large, a Qwen3-4B-shaped LLM, LoRA r 512 (the paper's), bf16 on one GPU.
The random base/full LLM gets its pad-token embedding row (the prompt's BOS) drawn like every other row, as a
trained LLM has one: Hugging Face's init zeroes it, and at a zero BOS RMSNorm's gradient (1/sqrt(eps)) grows the
BOS position's gradient with every layer until, beyond about 14 layers, it overflows into NaN LoRA gradients.
The evaluations a run makes before and after its steps (outside the timed steps) are cut to one clip and a few
generated tokens.
Each clip has 16 frames and `--audio-s` seconds of audio; the feature cache is off, so every step runs the frozen
encoders (the first-epoch cost; later epochs skip them). A step's time covers batch assembly, forward, backward
and the optimiser; the first step is a warm-up and not counted. Writes bench/results/train.json, keeping the rows
of sizes and stages a run did not measure.

    .venv/bin/python bench/train.py [--sizes tiny,base] [--stages stage1,stage2,stage3] [--steps 3] [--batch 2]
    .venv/bin/python bench/train.py --sizes full --device cuda   # written for one GPU, not run on the CPU box
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    "base": {"vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=224, patch_size=16),
             "text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
             "projection": 512,
             "hubert": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
             "llm": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                         num_key_value_heads=8, head_dim=128),
             "lora": (64, 64)},
    "full": {"vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=224, patch_size=14),
             "text": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
             "projection": 768,
             "hubert": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
             "llm": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128),
             "lora": (512, 512)},
}


def build_models(size: str, root: Path, llm: bool = True) -> dict[str, Any]:
    """Model dirs for a size: tiny from tests/tiny_models.py; base/full random weights of those shapes (the
    LLM only when a stage-3 row needs it: stages 1-2 read its config alone)."""
    from tiny_models import build_tiny_xemogpt

    tiny = build_tiny_xemogpt(root / "tiny")
    if size == "tiny":
        return {"clip": tiny["clip"], "hubert": tiny["hubert"], "llm": tiny["llm"], "lora": (tiny["lora_r"],
                                                                                             tiny["lora_alpha"])}
    from transformers import (
        AutoTokenizer,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        HubertConfig,
        HubertModel,
        Qwen3Config,
        Qwen3ForCausalLM,
        Wav2Vec2FeatureExtractor,
    )

    s = SIZES[size]
    d = {k: root / size / k for k in ("clip", "hubert", "llm")}
    clip_tok = AutoTokenizer.from_pretrained(tiny["clip"])  # 100 ids: inside any text vocab
    cfg = CLIPConfig(vision_config=s["vision"], text_config=s["text"] | {"vocab_size": 49408, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1}, projection_dim=s["projection"])
    CLIPModel(cfg).save_pretrained(d["clip"])
    CLIPImageProcessor.from_pretrained(tiny["clip"]).save_pretrained(d["clip"])
    clip_tok.save_pretrained(d["clip"])
    HubertModel(HubertConfig(**s["hubert"], feat_extract_norm="layer", do_stable_layer_norm=True)).save_pretrained(
        d["hubert"])
    Wav2Vec2FeatureExtractor.from_pretrained(tiny["hubert"]).save_pretrained(d["hubert"])
    tok = AutoTokenizer.from_pretrained(tiny["llm"])
    llm_cfg = Qwen3Config(**s["llm"], vocab_size=151936, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id)
    if llm:
        model = Qwen3ForCausalLM(llm_cfg)
        with torch.no_grad():
            model.get_input_embeddings().weight[tok.pad_token_id].normal_(0.0, llm_cfg.initializer_range)
        model.save_pretrained(d["llm"])
    else:
        llm_cfg.save_pretrained(d["llm"])
    tok.save_pretrained(d["llm"])
    return {**d, "lora": s["lora"]}


def synthetic_data(out: Path, n: int, audio_s: float) -> Path:
    """A data dir in the `xemo data build` layout: random frames and noise, fixed captions and descriptions."""
    from train.data import MANIFEST, MEDIA, SAMPLES, Sample

    rng = np.random.default_rng(0)
    (out / MEDIA).mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        np.savez(out / MEDIA / f"c{k}.npz", frames=rng.integers(0, 255, (16, 252, 448, 3), dtype=np.uint8),
                 audio=(0.1 * rng.standard_normal(int(audio_s * 16000))).astype(np.float32))
        s = Sample(id=f"c{k}", split="train", emotion="happy", subtitle="I cannot believe it.",
                   target="In the video, the man smiles broadly. In the audio, his voice is high. The emotion is "
                          "happy.", visual_caption=f"clip {k}: the man smiles broadly",
                   audio_caption=f"clip {k}: his voice is high", has_video=True, has_audio=True)
        row = asdict(s)
        row.pop("media")
        rows.append(json.dumps(row))
    (out / SAMPLES).write_text("\n".join(rows) + "\n")
    (out / MANIFEST).write_text(json.dumps({"labels": ["happy", "sad"], "synthetic": True}))
    return out


def bench_stage(size: str, models: dict[str, Any], stage: str, data: Path, steps: int, batch: int, device: str,
                out: Path) -> dict[str, Any]:
    from train.loop import run
    from xemo.settings import Settings

    r, alpha = models["lora"]
    s = Settings(xemogpt={"clip": models["clip"], "hubert": models["hubert"], "llm": models["llm"], "lora_r": r,
                          "lora_alpha": alpha},
                 train={"batch_size": batch, "feature_cache_mb": 0, "eval_every": 10**6, "save_every": 10**6,
                        "eval_max_samples": 1, "eval_max_new_tokens": 4,
                        "device": device, "embed_dim": 768 if size != "tiny" else 32})
    t0 = time.perf_counter()
    res = run(s, stage, data, out / f"{size}-{stage}", steps, progress=False)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / f"{size}-{stage}" / "metrics.jsonl").read_text().splitlines()]
    rates = [x["samples_per_s"] for x in rows if "samples_per_s" in x][1:]  # the first step warms up
    return {"size": size, "stage": stage, "batch": batch, "steps_timed": len(rates),
            "samples_per_s": round(statistics.median(rates), 3) if rates else None,
            "first_loss": res.first_loss, "last_loss": res.last_loss, "wall_s_incl_load": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,base")
    ap.add_argument("--stages", default="stage1,stage2,stage3")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--audio-s", type=float, default=4.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)  # 2 threads spin-wait badly on the shared box
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="xemo-bench-train-") as tmp:
        root = Path(tmp)
        data = synthetic_data(root / "data", max(a.batch * 2, 4), a.audio_s)
        for size in a.sizes.split(","):
            models = build_models(size, root / "models", llm="stage3" in a.stages)
            for stage in a.stages.split(","):
                row = bench_stage(size, models, stage, data, a.steps, a.batch, a.device, root / "runs")
                row["loadavg_1m"] = round(os.getloadavg()[0], 2)
                results.append(row)
                print(f"{size:5} {stage}  batch {a.batch}  {row['samples_per_s']} samples/s  "
                      f"(loss {row['first_loss']:.3f} -> {row['last_loss']:.3f}, {row['wall_s_incl_load']} s)",
                      flush=True)
    load = os.getloadavg()
    out = Path(a.out)
    if out.exists():  # keep the rows of sizes and stages this run did not measure (each row says its load)
        done = {(r["size"], r["stage"]) for r in results}
        old = json.loads(out.read_text())
        if old.get("device") == a.device:
            results = [r for r in old.get("results", []) if (r["size"], r["stage"]) not in done] + results
    doc = {"bench": "train", "device": a.device, "threads": a.threads, "audio_s": a.audio_s, "steps": a.steps,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_1m_at_end": load[0]},
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "note": "shared 2-core CPU box under load from other jobs; compare ratios within one run",
           "llm_init": "random (std initializer_range); base/full: the pad-token (BOS) embedding row drawn like the "
                       "others instead of Hugging Face's zeros, whose gradient overflows in a deep model",
           "results": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

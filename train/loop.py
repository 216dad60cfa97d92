"""The training loop of every stage: one process or many (torchrun, DDP), resumable, logged, checkpointed.

`run(settings, stage, data, out, steps, init)`:
- RUN/metrics.jsonl: one row per logged step (`step`, `loss`, its parts, `lr`, `samples_per_s`) and eval rows
  (`eval`: the split, then R@1 or label accuracy + EmoCue-360), written by process 0;
- RUN/checkpoint.ckpt (train/checkpoint.py) every `train.save_every` steps and at the end; RUN/manifest.json;
- RUN/loss.png, RUN/eval.png.
A RUN that already holds a checkpoint of the same stage is resumed from it (same batches, same randomness).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engines.errors import BadRequest
from train import checkpoint as ckpt
from train import distributed
from train.data import STAGES, BatchOrder, Sample, data_hashes, read_data, select
from train.model import Built, TrainModel, build
from train.objectives import stage1_randomness
from xemo.settings import Settings

METRICS, CHECKPOINT, RUN_MANIFEST = "metrics.jsonl", "checkpoint.ckpt", "manifest.json"


@dataclass
class Result:
    stage: str
    steps: int
    start_step: int
    first_loss: float | None
    last_loss: float | None
    evals: list[dict[str, Any]] = field(default_factory=list)
    out: Path = Path()


def _device(settings: Settings, d: distributed.Dist) -> torch.device:
    want = settings.train.device
    if want == "auto":
        return torch.device(f"cuda:{d.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(want)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadRequest(f"train.device is {want!r} but CUDA is not available")
    if dev.type == "cuda" and d.world > 1:
        dev = torch.device(f"cuda:{d.local_rank}")
    return dev


def _bf16(settings: Settings, device: torch.device) -> bool:
    p = settings.train.precision
    if p == "bf16" and device.type != "cuda":
        raise BadRequest("train.precision bf16 needs a CUDA device (CPU training runs in fp32)")
    return p == "bf16" or (p == "auto" and device.type == "cuda")


def collate(built: Built, stage: str, samples: list[Sample], rand: dict[str, torch.Tensor] | None,
            labels: list[str]) -> dict[str, Any]:
    """One process's batch: the samples (media are read by the model, only on a feature-cache miss), the frozen
    text embeddings of the captions (stages 1-2), the step's shuffles and masks (stage 1), the label set."""
    batch: dict[str, Any] = {"samples": samples}
    if stage == "stage1":
        assert built.text is not None and rand is not None
        batch |= {**rand, "text": built.text.features([s.visual_caption or "" for s in samples], built.model.device)}
    elif stage == "stage2":
        assert built.text is not None
        batch["text"] = built.text.features([s.audio_caption or "" for s in samples], built.model.device)
    else:
        batch["labels"] = labels
    return batch


def _evaluate(built: Built, stage: str, samples: list[Sample], train: list[Sample], labels: list[str],
              settings: Settings) -> dict[str, Any]:
    from train import evaluate

    m = built.model
    m.eval()
    try:
        chosen = samples[: settings.train.eval_max_samples]
        if stage == "stage3":
            return evaluate.instruction(m, chosen, labels, settings.train.eval_max_new_tokens, settings.eval.embedder)
        assert built.text is not None
        row = evaluate.retrieval(m, built.text, chosen)
        # R@1 among training clips too: how well the bridge fits what it trains on, next to how it generalises
        fit = evaluate.retrieval(m, built.text, train[: settings.train.eval_max_samples])
        return row | {"train_r1": fit["r1"], "train_chance": fit["chance"]}
    finally:
        m.train()


def _optimizer(m: TrainModel, settings: Settings) -> torch.optim.Optimizer:
    t = settings.train
    decay, no_decay = [], []
    for _, p in sorted(m.named_parameters(), key=lambda kv: kv[0]):
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=t.lr)


def _lr(settings: Settings, step: int) -> float:
    t = settings.train
    return t.lr * min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else t.lr


def _read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("step", 0) <= upto:
                    rows.append(row)
    return rows


def run(settings: Settings, stage: str, data_dir: Path, out: Path, steps: int | None = None,
        init: Path | None = None, progress: bool = True) -> Result:
    if stage not in STAGES:
        raise BadRequest(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    t = settings.train
    total = t.steps if steps is None else steps
    if total < 0:
        raise BadRequest("--steps must be 0 or more")
    d = distributed.setup(torch.cuda.is_available() and not t.device.startswith("cpu"), t.dist_init)
    try:
        return _run(settings, stage, Path(data_dir), Path(out), total, init, progress, d)
    finally:
        distributed.teardown()


def _run(settings: Settings, stage: str, data_dir: Path, out: Path, total: int, init: Path | None,
         progress: bool, d: distributed.Dist) -> Result:
    t, x = settings.train, settings.xemogpt
    if t.cpu_threads:
        torch.set_num_threads(t.cpu_threads)
    device = _device(settings, d)
    bf16 = _bf16(settings, device)
    data_manifest, samples = read_data(data_dir)
    train_s = select(samples, stage, "train")
    val_s = select(samples, stage, "validation")
    eval_split = "validation" if val_s else "train"
    if not val_s:
        val_s = train_s
    if not train_s:
        raise BadRequest(f"{data_dir}: no training samples usable by {stage} (captions / media missing)")
    labels = list(data_manifest.get("labels") or sorted({s.emotion for s in samples}))
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, metrics_path = out / CHECKPOINT, out / METRICS

    state = ckpt.load_run(ckpt_path) if ckpt_path.is_file() else None
    if state is not None and state["stage"] != stage:
        raise BadRequest(f"{out} holds a {state['stage']} run; use another --out for {stage}")
    if state is None and init is not None and not init.is_file():
        raise BadRequest(f"--init: checkpoint file not found: {init}")

    built = build(settings, stage, device, bf16)
    m = built.model
    trainable = m.set_trainable()
    opt = _optimizer(m, settings)
    start = 0
    init_report: dict[str, Any] | None = None
    if state is not None:
        ckpt.load_released(m, state["state_dict"], x.lora_r, x.lora_alpha, require_heads=True)
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
    elif init is not None:
        init_report = ckpt.load_released(m, ckpt.read_state_dict(init), x.lora_r, x.lora_alpha, require_heads=False)

    manifest = {
        "stage": stage, "steps": total, "resumed_from_step": start, "world_size": d.world,
        "batch_size_per_process": t.batch_size, "global_batch": t.batch_size * d.world,
        "device": str(device), "precision": "bf16" if bf16 else "fp32",
        "settings": {k: v for k, v in settings.redacted().items() if k in ("train", "xemogpt")},
        "data": {"dir": str(data_dir.resolve()), "sha256": data_hashes(data_dir), "n_train": len(train_s),
                 "n_eval": len(val_s), "eval_split": eval_split},
        "init": None if init is None else {"path": str(init), "sha256": ckpt.sha256_file(init),
                                           "loaded": init_report},
        "trainable_parameters": sum(p.numel() for p in m.parameters() if p.requires_grad),
        "trainable_tensors": len(trainable),
        "versions": _versions(),
    }
    rows = _read_metrics(metrics_path, start) if start else []
    if d.main:
        (out / RUN_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def log(row: dict[str, Any]) -> None:
        rows.append(row)
        if d.main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    model: torch.nn.Module = m
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # stage 3: a batch without audio (or video) leaves that projector unused
        model = DistributedDataParallel(m, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=stage == "stage3")
    order = BatchOrder(len(train_s), t.batch_size * d.world, t.seed)
    evals: list[dict[str, Any]] = [r for r in rows if "eval" in r]
    if start == 0 and total > 0 and d.main:
        row = {"step": 0, "eval": eval_split, **_evaluate(built, stage, val_s, train_s, labels, settings)}
        log(row)
        evals.append(row)
    distributed.barrier()

    first = last = None
    bar = _Bar(progress and d.main, stage, start, total)
    m.train()
    for step in range(start, total):
        tic = time.perf_counter()
        idx = order.batch(step)[d.rank * t.batch_size:(d.rank + 1) * t.batch_size]
        rand = None
        if stage == "stage1":
            g = stage1_randomness(t.batch_size * d.world, x.num_frames, t.permute_prob, t.mask_prob, t.seed, step)
            rand = {k: v[d.rank * t.batch_size:(d.rank + 1) * t.batch_size] for k, v in g.items()}
        batch = collate(built, stage, [train_s[i] for i in idx], rand, labels)
        for group in opt.param_groups:
            group["lr"] = _lr(settings, step)
        torch.manual_seed(t.seed * 1_000_003 + step * d.world + d.rank)  # dropout (LoRA, AECB layers)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            losses = model(batch)
        values = distributed.mean_over_processes({k: float(v.detach()) for k, v in losses.items()}, device)
        if not all(math.isfinite(v) for v in values.values()):
            raise BadRequest(f"{stage}: the loss became {values['loss']} at step {step + 1}; lower train.lr")
        losses["loss"].backward()
        # a non-finite total norm would make clipping turn every weight NaN: stop before the optimiser does
        norm = torch.nn.utils.clip_grad_norm_([p for p in m.parameters() if p.requires_grad], t.max_grad_norm)
        if not math.isfinite(float(norm)):
            raise BadRequest(_nonfinite_gradients(m, stage, step + 1))
        opt.step()
        opt.zero_grad(set_to_none=True)
        first = values["loss"] if first is None else first
        last = values["loss"]
        done = step + 1
        if done % t.log_every == 0 or done == total:
            log({"step": done, **values, "lr": opt.param_groups[0]["lr"],
                 "samples_per_s": t.batch_size * d.world / (time.perf_counter() - tic)})
        bar.update(done, values["loss"])
        if done % t.eval_every == 0 or done == total:
            if d.main:
                row = {"step": done, "eval": eval_split, **_evaluate(built, stage, val_s, train_s, labels, settings)}
                log(row)
                evals.append(row)
            distributed.barrier()
        if done % t.save_every == 0 or done == total:
            if d.main:
                ckpt.save(ckpt_path, m, stage, done, opt, manifest | {"step": done})
                _plots(out, rows)
            distributed.barrier()
    bar.close()
    if d.main and total == start:  # nothing to train (e.g. --steps 0): still write the model as it stands
        ckpt.save(ckpt_path, m, stage, start, opt, manifest | {"step": start})
        _plots(out, rows)
    distributed.barrier()
    return Result(stage, total, start, first, last, evals, out)


def _nonfinite_gradients(m: TrainModel, stage: str, step: int) -> str:
    bad = [n for n, p in m.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    n_grads = sum(p.grad is not None for p in m.parameters())
    msg = (f"{stage}: the gradients became non-finite at step {step} with a finite loss ({len(bad)} of {n_grads} "
           f"trainable tensors, e.g. {', '.join(bad[:3])}); the weights were left as they were")
    if stage == "stage3" and not bool(m.llm.get_input_embeddings().weight[m.pad_id].any()):
        # RMSNorm's input gradient at a zero vector is 1/sqrt(eps): the BOS position's grows with every layer
        msg += ("; the LLM's pad-token embedding, the prompt's BOS, is all zeros, which makes the BOS position's "
                "gradient grow with every layer until it overflows: give that row non-zero values (a trained "
                "LLM has them; a random Hugging Face init zeroes it)")
    return msg


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": str(torch.__version__), "transformers": transformers.__version__, "peft": peft.__version__}


class _Bar:
    """A rich progress bar on stderr (process 0 only)."""

    def __init__(self, on: bool, stage: str, start: int, total: int) -> None:
        self.p = None
        if on:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn(f"{stage}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                              TextColumn("loss {task.fields[loss]}"), console=Console(stderr=True))
            self.p.start()
            self.task = self.p.add_task(stage, total=total, completed=start, loss="-")

    def update(self, done: int, loss: float) -> None:
        if self.p is not None:
            self.p.update(self.task, completed=done, loss=f"{loss:.4f}")

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


def _plots(out: Path, rows: list[dict[str, Any]]) -> None:
    from train.plots import plot_run

    plot_run(out, rows)

"""PNG plots of a training run from its metrics rows: RUN/loss.png (loss and its parts) and RUN/eval.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EVAL_KEYS = ("r1", "train_r1", "chance", "label_accuracy", "emocue360_f1")
SKIP = {"step", "lr", "samples_per_s", "eval"}


def plot_run(out: Path, rows: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    train = [r for r in rows if "eval" not in r]
    if train:
        fig, ax = plt.subplots(figsize=(7, 4))
        keys = [k for k in train[-1] if k not in SKIP]
        for k in keys:
            ax.plot([r["step"] for r in train if k in r], [r[k] for r in train if k in r], label=k,
                    linewidth=2 if k == "loss" else 1)
        ax.set_ylabel("loss")
        written.append(_save(plt, fig, ax, out / "loss.png"))
    evals = [r for r in rows if "eval" in r]
    if evals:
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in EVAL_KEYS:
            pts = [(r["step"], r[k]) for r in evals if isinstance(r.get(k), int | float)]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=k, linestyle="--" if k == "chance" else "-")
        ax.set_ylim(0, 1.05)
        written.append(_save(plt, fig, ax, out / "eval.png"))
    return written


def _save(plt: Any, fig: Any, ax: Any, path: Path) -> Path:
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

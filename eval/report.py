"""DIR/report.md and its PNG plots (per-category P/R/F1 bars, label confusion matrix, latency histogram)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.emocue360 import CATEGORIES

PLOTS = {"prf": "emocue360_prf.png", "confusion": "label_confusion.png", "latency": "latency_hist.png"}


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def plot_prf(emo: dict[str, dict[str, float | None]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    x = np.arange(len(CATEGORIES))
    for i, metric in enumerate(("precision", "recall", "f1")):
        vals = [emo[c][metric] or 0.0 for c in CATEGORIES]
        bars = ax.bar(x + (i - 1) * 0.26, vals, width=0.26, label=metric)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, CATEGORIES)
    ax.set_ylim(0, 1.18)
    ax.set_title("EmoCue-360")
    ax.legend(fontsize=8, loc="upper center", ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(conf: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels, m = conf["labels"], np.asarray(conf["matrix"], dtype=int)
    n = max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n), dpi=100)
    if len(labels):
        ax.imshow(m, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(
                    j,
                    i,
                    str(m[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if m[i, j] > m.max() / 2 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title("label confusion")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency(latencies: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    if latencies:
        ax.hist(latencies, bins=min(30, max(5, len(latencies))))
    ax.set_xlabel("end-to-end latency per clip (s)")
    ax.set_ylabel("clips")
    ax.set_title("latency")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_markdown(summary: dict[str, Any], details: dict[str, Any], records: list[dict[str, Any]]) -> str:
    emo, lab, lat = summary["emocue360"], summary["label"], summary["latency"]
    cov = (details.get("emocue360") or {}).get("coverage") or {}
    lines = [
        "# xemo benchmark report",
        "",
        f"- model: `{summary.get('model')}`",
        f"- manifest: `{Path(str(details.get('manifest', ''))).name}`; clips: {details['n_clips']}, "
        f"ok: {details['n_ok']}, failed: {details['n_failed']}",
        f"- analysed {'by the server at ' + str(details['server']) if details.get('server') else 'in process'}, "
        f"concurrency {details.get('concurrency', 1)}",
        f"- cue extractor: {details.get('extractor')}; matching: {details.get('matching')}; "
        f"embeddings: {details.get('embedder')}",
        "",
        "## EmoCue-360",
        "",
        "| category | precision | recall | F1 | samples |",
        "|---|---|---|---|---|",
    ]
    cats = details.get("emocue360") or {}
    for c in CATEGORIES:
        n = (cats.get(c) or {}).get("n", 0)
        lines.append(f"| {c} | {_fmt(emo[c]['precision'])} | {_fmt(emo[c]['recall'])} | {_fmt(emo[c]['f1'])} | {n} |")
    if cov:
        lines += [
            "",
            f"Coverage: {cov.get('n_scored')}/{cov.get('n_reference')} clips with a reference were "
            f"scored" + (f"; missing (no answer): {', '.join(cov['missing'])}" if cov.get("missing") else "") + ".",
        ]
    alt = details.get("emocue360_answer_cues")
    if alt:
        lines += [
            "",
            "The same references against the answers' structured cues (visual/auditory cues as they are, "
            "verbal cues and the label as emotional; not part of summary.json):",
            "",
            "| category | precision | recall | F1 |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c} | {_fmt(alt[c]['precision'])} | {_fmt(alt[c]['recall'])} | {_fmt(alt[c]['f1'])} |"
            for c in CATEGORIES
        ]
    lines += [
        "",
        "The released metric (max matching) does not penalise duplicated or generic cues; "
        "`xemo eval score --matching one-to-one` gives the assignment-based variant.",
        "",
        f"![EmoCue-360]({PLOTS['prf']})",
        "",
        "## Emotion label",
        "",
        f"accuracy {_fmt(lab['accuracy'])} · UAR {_fmt(lab['uar'])} · WAR {_fmt(lab['war'])} · n {lab['n']}",
        "",
        f"![confusion]({PLOTS['confusion']})",
        "",
        "## Latency",
        "",
    ]
    e2e, ttl = lat["e2e_s"], lat["time_to_label_s"]
    lines += [
        "| | mean | p50 | p90 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|",
        "| end to end (s) | " + " | ".join(_fmt(e2e[k], 3) for k in ("mean", "p50", "p90", "p95", "p99", "max")) + " |",
        "| time to label (s) | "
        + " | ".join(_fmt(ttl[k], 3) for k in ("mean", "p50", "p90", "p95", "p99", "max"))
        + " |",
        "| cue extraction per clip (s) | "
        + " | ".join(_fmt(details["extraction_s_per_clip"][k], 3) for k in ("mean", "p50", "p90", "p95", "p99", "max"))
        + " |",
        "| scoring per clip (s) | "
        + " | ".join(_fmt(details["scoring_s_per_clip"][k], 3) for k in ("mean", "p50", "p90", "p95", "p99", "max"))
        + " |",
        "",
        "Cue extraction covers the reference and the prediction of a clip; scoring reuses the cue embeddings the "
        "extraction already computed (the offline extractor embeds every clause), so its time is the matching alone.",
        "",
        f"![latency]({PLOTS['latency']})",
        "",
        "## Clips",
        "",
        "| id | status | reference | predicted | latency (s) | F1 visual | F1 auditory | F1 emotional |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        per = r.get("emocue360") or {}
        f1s = [_fmt((per.get(c) or {}).get("f1"), 3) if per.get(c) else "–" for c in CATEGORIES]
        status = r.get("status", "?") if r.get("status") == "ok" else f"error: {(r.get('error') or {}).get('type')}"
        lines.append(
            f"| {r['id']} | {status} | {r.get('reference_label') or '–'} | "
            f"{r.get('predicted_label') or '–'} | {_fmt(r.get('latency_s'), 2)} | " + " | ".join(f1s) + " |"
        )
    if details.get("failed"):
        lines += ["", "## Failures", ""]
        lines += [f"- `{f['id']}`: {f.get('type')}: {f.get('message')}" for f in details["failed"]]
    return "\n".join(lines) + "\n"


def write_report(out: Path, summary: dict[str, Any], details: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    plot_prf(summary["emocue360"], out / PLOTS["prf"])
    plot_confusion(details["label"]["confusion"], out / PLOTS["confusion"])
    plot_latency([float(r["latency_s"]) for r in records if r.get("status") == "ok"], out / PLOTS["latency"])
    path = out / "report.md"
    path.write_text(render_markdown(summary, details, records), encoding="utf-8")
    return path

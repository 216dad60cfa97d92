"""The benchmark runner behind `xemo eval run`: analyse every manifest clip, extract and score cues, report.

Results are appended to DIR/results.jsonl as each clip finishes, so an interrupted run resumes where it stopped
(clips with an "ok" result are not analysed again; failed ones are retried). Once every clip has a result, cues
are extracted from the reference descriptions (unless the manifest gives reference cues) and from the answers'
explanations, scored with EmoCue-360, and DIR/summary.json, DIR/run.json, DIR/report.md and the plots are written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import XemoError
from eval.analyzers import Analyzer, HttpAnalyzer, InProcessAnalyzer
from eval.embed import CachedEmbedder, Embedder, default_embedder
from eval.emocue360 import CATEGORIES, ScoreReport, score
from eval.extractors import Extractor, make_extractor
from eval.labels import label_metrics, normalise_label
from eval.manifest import ManifestRow, read_manifest
from xemo.settings import Settings

RESULTS = "results.jsonl"


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """Existing results by id (the last line for an id wins; a torn last line from a crash is ignored)."""
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            out[rec["id"]] = rec
    return out


def _write_jsonl_atomic(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _answer_summary(answer: dict[str, Any]) -> dict[str, Any]:
    """What results.jsonl keeps of an answer (everything but bulky per-cue evidence)."""
    cues = [
        {k: c.get(k) for k in ("modality", "text", "start", "end", "strength")}
        for c in answer.get("cues", [])
        if isinstance(c, dict)
    ]
    return {
        "id": answer.get("id"),
        "model": answer.get("model"),
        "profile": answer.get("profile"),
        "emotion": answer.get("emotion"),
        "explanation": answer.get("explanation", ""),
        "cues": cues,
        "timings": answer.get("timings", {}),
        "usage": answer.get("usage", {}),
    }


async def analyze_all(
    rows: list[ManifestRow],
    analyzer: Analyzer,
    results_path: Path,
    concurrency: int,
    done: dict[str, dict[str, Any]],
    show_progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Analyse the rows without an ok result, `concurrency` at a time, appending each result as it lands."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    todo = [r for r in rows if done.get(r.id, {}).get("status") != "ok"]
    sem = asyncio.Semaphore(max(1, concurrency))
    write_lock = asyncio.Lock()
    progress = Progress(
        TextColumn("[bold]analyse"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=Console(stderr=True),
        disable=not show_progress,
    )

    async def one(row: ManifestRow, task: Any) -> None:
        async with sem:
            t0 = time.perf_counter()
            rec: dict[str, Any] = {"id": row.id, "video": row.video.name, "reference_label": row.reference_label}
            try:
                answer = await analyzer.analyze(row)
                rec.update(status="ok", answer=_answer_summary(answer))
            except XemoError as e:
                rec.update(status="error", error={"type": e.type, "message": e.message})
            except OSError as e:  # unreadable media file, connection refused, …
                rec.update(status="error", error={"type": type(e).__name__, "message": str(e)[:300]})
            except Exception as e:  # keep going: one broken clip must not lose a whole benchmark
                rec.update(status="error", error={"type": "internal", "message": f"{type(e).__name__}: {e}"[:300]})
            rec["latency_s"] = time.perf_counter() - t0
            async with write_lock:
                with results_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                done[row.id] = rec
                progress.update(task, advance=1, last=f"{row.id}: {rec['status']}")

    with progress:
        task = progress.add_task("analyse", total=len(rows), completed=len(rows) - len(todo), last="")
        await asyncio.gather(*(one(r, task) for r in todo))
    return done


def _digest(*texts: str) -> str:
    return hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:16]


def _percentiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(xs, dtype=float)
    return {
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


@dataclass
class RunOutcome:
    summary: dict[str, Any]
    details: dict[str, Any]
    records: list[dict[str, Any]]
    score: ScoreReport | None = None
    out: Path = field(default_factory=Path)


def answer_cues(answer: dict[str, Any]) -> dict[str, list[str]]:
    """The answer's own structured cues in the EmoCue-360 layout: a second view of the same prediction.

    Visual and auditory cues keep their category; quoted speech becomes "Subtitle text: …" (which the metric
    drops), other verbal cues and the label are interpretations and count as emotional."""
    out: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    for c in answer.get("cues", []):
        text = str(c.get("text") or "").strip()
        if not text:
            continue
        mod = c.get("modality")
        if mod in ("visual", "auditory"):
            out[mod].append(text)
        elif text.lower().startswith("says"):
            out["auditory"].append("Subtitle text: " + text.split(":", 1)[-1].strip())
        else:
            out["emotional"].append(text)
    label = ((answer.get("emotion") or {}).get("label") or "").strip()
    if label:
        out["emotional"].append(f"The emotion is {label}.")
    return out


def extract_and_score(
    rows: list[ManifestRow],
    records: dict[str, dict[str, Any]],
    extractor: Extractor,
    embedder: Embedder,
    matching: str = "max",
    threshold: float = 0.5,
) -> tuple[ScoreReport | None, ScoreReport | None]:
    """Fill each ok record's cues, per-sample scores and timings; return the aggregate EmoCue-360 reports of
    the cues extracted from the explanations (the paper's protocol) and of the answers' structured cues."""
    preds: dict[str, dict[str, list[str]]] = {}
    refs: dict[str, dict[str, list[str]]] = {}
    embedder.encode(["warm-up"])  # per-clip times exclude loading the embedding model
    warmup = getattr(extractor, "warmup", None)
    if callable(warmup):
        warmup()
    for row in rows:
        rec = records.get(row.id)
        ref_src = "manifest" if row.reference_cues is not None else "extracted" if row.reference_description else None
        old = (rec or {}).get("cues") or {}
        explanation = ((rec or {}).get("answer") or {}).get("explanation") or ""
        key = _digest(row.reference_description or json.dumps(row.reference_cues), explanation)
        # Cues from an earlier run are reused only for the same extractor and the same texts.
        reuse = (
            old.get("extractor") == extractor.name and old.get("reference_source") == ref_src and old.get("key") == key
        )
        t0 = time.perf_counter()
        if ref_src == "manifest":
            ref = row.reference_cues
        elif ref_src == "extracted":
            ref = (
                old["reference"]
                if reuse and old.get("reference") is not None
                else extractor.extract(row.reference_description or "")
            )
        else:
            ref = None
        if ref is not None:
            refs[row.id] = ref
        if rec is None or rec.get("status") != "ok":
            continue
        pred = old["prediction"] if reuse and old.get("prediction") is not None else extractor.extract(explanation)
        extract_s = (old.get("extract_s") if reuse else None) or (time.perf_counter() - t0)
        preds[row.id] = pred
        rec["cues"] = {
            "extractor": extractor.name,
            "reference_source": ref_src,
            "reference": ref,
            "prediction": pred,
            "extract_s": extract_s,
            "key": key,
        }
        if ref is not None:
            t1 = time.perf_counter()
            one = score({row.id: pred}, {row.id: ref}, embedder, matching, threshold)  # type: ignore[arg-type]
            rec["emocue360"] = one.per_sample.get(row.id)
            rec["cues"]["score_s"] = time.perf_counter() - t1
    if not refs:
        return None, None
    by_answer = {rid: answer_cues(records[rid]["answer"]) for rid in preds}
    for rid, cues in by_answer.items():
        records[rid]["cues"]["answer"] = cues
    return (
        score(preds, refs, embedder, matching, threshold),  # type: ignore[arg-type]
        score(by_answer, refs, embedder, matching, threshold),
    )  # type: ignore[arg-type]


def summarise(
    rows: list[ManifestRow], records: dict[str, dict[str, Any]], rep: ScoreReport | None, model: str, labels: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """summary.json (exactly the issue's keys) and run.json (counts, coverage, confusion, failures)."""
    oks = [records[r.id] for r in rows if records.get(r.id, {}).get("status") == "ok"]
    emo = {
        c: {
            "precision": rep.categories[c].precision if rep else None,
            "recall": rep.categories[c].recall if rep else None,
            "f1": rep.categories[c].f1 if rep else None,
        }
        for c in CATEGORIES
    }
    pairs = []
    for rec in oks:
        ref = normalise_label(rec.get("reference_label"))
        pred = normalise_label(((rec.get("answer") or {}).get("emotion") or {}).get("label"))
        rec["predicted_label"] = pred
        if ref and pred:
            pairs.append((ref, pred))
    lm = label_metrics(pairs, labels)
    e2e = [float(r["latency_s"]) for r in oks]
    ttl = [
        float(r["answer"]["timings"]["time_to_label_s"])
        for r in oks
        if isinstance(r["answer"].get("timings", {}).get("time_to_label_s"), int | float)
    ]
    extract_s = [float(r["cues"]["extract_s"]) for r in oks if r.get("cues", {}).get("extract_s") is not None]
    score_s = [float(r["cues"]["score_s"]) for r in oks if r.get("cues", {}).get("score_s") is not None]
    latency = {"n": len(e2e), "e2e_s": _percentiles(e2e), "time_to_label_s": _percentiles(ttl)}
    summary = {
        "emocue360": emo,
        "label": {"accuracy": lm["accuracy"], "uar": lm["uar"], "war": lm["war"], "n": lm["n"]},
        "latency": latency,
        "model": model or None,
    }
    failed = [
        {"id": r.id, **records[r.id].get("error", {})} for r in rows if records.get(r.id, {}).get("status") == "error"
    ]
    details = {
        "n_clips": len(rows),
        "n_ok": len(oks),
        "n_failed": len(failed),
        "failed": failed,
        "n_with_reference_label": sum(1 for r in rows if r.reference_label),
        "emocue360": rep.to_dict() | {"per_sample": None} if rep else None,
        "label": lm,
        "extraction_s_per_clip": _percentiles(extract_s),
        "scoring_s_per_clip": _percentiles(score_s),
    }
    return summary, details


def run_benchmark(
    settings: Settings,
    manifest: Path,
    out: Path,
    server: str | None = None,
    concurrency: int = 1,
    extractor: Extractor | None = None,
    embedder: Embedder | None = None,
    analyzer: Analyzer | None = None,
    show_progress: bool = True,
    matching: str = "max",
    threshold: float = 0.5,
) -> RunOutcome:
    rows = read_manifest(manifest)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS
    records = load_results(results_path)
    owned = analyzer is None  # an analyzer passed in stays loaded for the caller (who closes it)
    if analyzer is None:
        # With a shared config, the server's first API key is also the runner's credential.
        key = settings.server.api_keys[0].get_secret_value() if settings.server.api_keys else None
        analyzer = HttpAnalyzer(server, settings, api_key=key) if server else InProcessAnalyzer(settings)

    async def go() -> None:
        todo = any(records.get(r.id, {}).get("status") != "ok" for r in rows)
        if not todo:
            return
        await analyzer.start()
        try:
            await analyze_all(rows, analyzer, results_path, concurrency, records, show_progress)
        finally:
            if owned:
                await analyzer.close()

    asyncio.run(go())
    emb = embedder if embedder is not None else default_embedder(settings.eval.embedder)
    if not isinstance(emb, CachedEmbedder):
        emb = CachedEmbedder(emb)
    ext = extractor if extractor is not None else make_extractor(settings, settings.eval.extractor, emb)
    rep, rep_answer = extract_and_score(rows, records, ext, emb, matching, threshold)
    model = analyzer.model or next(
        (r["answer"].get("model") for r in records.values() if r.get("status") == "ok" and r["answer"].get("model")), ""
    )
    summary, details = summarise(rows, records, rep, model, list(settings.lite.labels))
    details |= {
        "manifest": str(manifest),
        "server": server,
        "concurrency": concurrency,
        "extractor": ext.name,
        "matching": matching,
        "embedder": getattr(emb, "name", ""),
    }
    details["emocue360_answer_cues"] = (
        {c: rep_answer.categories[c].to_dict() for c in CATEGORIES} if rep_answer else None
    )
    if hasattr(ext, "stats"):
        details["extractor_stats"] = ext.stats
    ids = {r.id for r in rows}
    ordered = [records[r.id] for r in rows if r.id in records] + [v for k, v in records.items() if k not in ids]
    _write_jsonl_atomic(results_path, ordered)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "run.json").write_text(json.dumps(details, indent=2) + "\n")
    from eval.report import write_report

    write_report(out, summary, details, [records[r.id] for r in rows if r.id in records])
    return RunOutcome(summary=summary, details=details, records=ordered, score=rep, out=out)

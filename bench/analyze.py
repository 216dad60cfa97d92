"""Latency of the lite profile per stage: ingest, visual, audio, label, prefill, decode, time to label, total.

Runs a 10 s generated clip (a real face photograph animated by ffmpeg, espeak-ng speech) and, if present, the
shared sample, several times each after a warm-up; prints medians and writes bench/results/analyze.json.

    .venv/bin/python bench/analyze.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import media  # noqa: E402

from engines.ingest import ingest  # noqa: E402
from engines.pipeline import build_pipeline  # noqa: E402
from engines.types import AnalyzeRequest  # noqa: E402
from xemo.settings import Settings  # noqa: E402


def make_clip(d: Path) -> Path:
    speech = media.speech(d / "speech.wav", "I can't believe it, this is wonderful news, I am so glad you came.")
    padded = d / "speech10.wav"
    media.run(["sox", str(speech), str(padded), "pad", "0", "10", "trim", "0", "10"])
    img = media.face_image(d / "face.png")
    return media.face_clip(d / "clip10.mp4", img, seconds=10.0, audio=padded)


def measure(pipeline, path: Path, runs: int) -> dict:  # noqa: ANN001
    rows = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        clip = ingest(path, None, pipeline.settings.ingest)
        ingest_s = time.perf_counter() - t0
        answer = asyncio.run(pipeline.analyze(AnalyzeRequest(clip=clip, received_at=t0)))
        if i == 0:
            continue  # warm-up run
        row = {"ingest": ingest_s, **answer.timings}
        rows.append(row)
    keys = sorted({k for r in rows for k in r})
    med = {k: round(statistics.median(r[k] for r in rows if k in r), 4) for k in keys}
    return {"clip": path.name, "runs": runs, "median_s": med, "label": answer.emotion["label"],
            "cues": len(answer.cues), "generated_tokens": answer.usage.get("generated_tokens"),
            "explanation": answer.explanation}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "analyze.json")
    args = ap.parse_args()
    settings = Settings()
    pipeline = build_pipeline(settings)
    t = time.perf_counter()
    pipeline.load()
    pipeline.warmup()
    load_s = time.perf_counter() - t
    results = {"machine": platform.processor() or platform.machine(), "load_and_warmup_s": round(load_s, 2),
               "model": pipeline.model, "clips": []}
    with tempfile.TemporaryDirectory() as d:
        results["clips"].append(measure(pipeline, make_clip(Path(d)), args.runs))
    sample = media.SAMPLES / "sample_00000007.mp4"
    if sample.exists():
        results["clips"].append(measure(pipeline, sample, args.runs))
    pipeline.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    for c in results["clips"]:
        m = c["median_s"]
        print(f"{c['clip']}: " + ", ".join(f"{k}={v:.3f}s" for k, v in m.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

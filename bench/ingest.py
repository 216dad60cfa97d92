"""Ingest benchmark: 16 frames + 16 kHz audio from a 10 s 720p clip, per video decoder, median of several runs.

For each decoder it times `ingest()` end to end (worker process, private copy, .npy hand-back) and the same
decode in-process (engines.ingest.decode.process), so the difference is the price of the isolation. The
per-call overhead is also measured on a tiny audio-only upload. torchcodec is timed directly when installed.
Writes bench/results/ingest.json.

    .venv/bin/python bench/ingest.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.ingest import ingest, warmup  # noqa: E402
from engines.ingest.decode import process  # noqa: E402
from xemo.settings import IngestSettings  # noqa: E402


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_media(d: Path) -> tuple[Path, Path]:
    """A 10 s 1280x720 30 fps h264 clip with 44.1 kHz stereo AAC (default GOP, like a phone export), and a
    0.5 s wav for the fixed per-call overhead."""
    clip, tiny = d / "clip720.mp4", d / "tiny.wav"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=1280x720:rate=30:duration=10",
           "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=44100:duration=10", "-ac", "2",
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip))
    ffmpeg("-f", "lavfi", "-i", "sine=d=0.5:sample_rate=16000", "-c:a", "pcm_s16le", str(tiny))
    return clip, tiny


def median_s(fn: Callable[[], Any], runs: int) -> tuple[float, list[float]]:
    fn()  # warm caches (page cache, numba-free but FFmpeg's codec tables, worker imports)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), [round(x, 4) for x in times]


def in_process(path: Path, fmt: str, s: IngestSettings) -> dict[str, Any]:
    meta, arrays = process({"video": str(path), "video_fmt": fmt, "decoder": s.video_decoder}, s)
    assert arrays["frames"].shape[0] == s.num_frames and arrays["audio"].size > 0
    return meta


def torchcodec_direct(path: Path, runs: int) -> dict[str, Any] | None:
    try:
        import numpy as np
        from torchcodec.decoders import AudioDecoder, VideoDecoder
    except Exception:
        return None

    def once() -> None:
        v = VideoDecoder(str(path), device="cpu", seek_mode="exact", num_ffmpeg_threads=2)
        n = v.metadata.num_frames
        v.get_frames_at(indices=np.linspace(0, n - 1, 16, dtype=int).tolist())
        AudioDecoder(str(path), sample_rate=16000, num_channels=1).get_all_samples()

    med, all_ = median_s(once, runs)
    return {"direct_s": round(med, 4), "runs_s": all_, "note": "full-resolution frames, in-process, no limits"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = ap.parse_args()

    results: dict[str, Any] = {
        "task": "16 uniformly sampled RGB frames (long side 720) + mono 16 kHz audio from a 10 s 1280x720 "
                "30 fps h264/AAC clip",
        "runs": args.runs, "statistic": "median seconds",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "decoders": {},
    }
    with tempfile.TemporaryDirectory(prefix="xemo-bench-ingest-") as tmp:
        clip, tiny = make_media(Path(tmp))
        base = IngestSettings(timeline_fps=0.0, decode_workers=1)
        warmup(base)
        for decoder in ("decord", "pyav"):
            s = base.model_copy(update={"video_decoder": decoder})
            e2e, e2e_runs = median_s(lambda s=s: ingest(clip, None, s), args.runs)
            direct, direct_runs = median_s(lambda s=s: in_process(clip, "mp4", s), args.runs)
            st = base.model_copy(update={"video_decoder": decoder, "timeline_fps": 4.0})
            with_tl, _ = median_s(lambda st=st: ingest(clip, None, st), args.runs)
            results["decoders"][decoder] = {
                "ingest_s": round(e2e, 4), "in_process_s": round(direct, 4),
                "isolation_overhead_s": round(e2e - direct, 4), "frames_per_s": round(16 / e2e, 1),
                "ingest_with_timeline_4fps_s": round(with_tl, 4),
                "ingest_runs_s": e2e_runs, "in_process_runs_s": direct_runs,
            }
        tc = torchcodec_direct(clip, args.runs)
        results["decoders"]["torchcodec"] = tc or {"skipped": "torchcodec is not installed"}
        tiny_e2e, _ = median_s(lambda: ingest(tiny, None, base), args.runs)
        tiny_direct, _ = median_s(
            lambda: process({"video": str(tiny), "video_fmt": "wav", "decoder": "pyav"}, base), args.runs)
        results["per_call_overhead_s"] = round(tiny_e2e - tiny_direct, 4)
        results["tiny_wav"] = {"ingest_s": round(tiny_e2e, 4), "in_process_s": round(tiny_direct, 4)}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'decoder':<11} {'ingest':>9} {'in-proc':>9} {'isolation':>10} {'f/s':>6} {'+timeline':>10}")
    for name, r in results["decoders"].items():
        if "ingest_s" in r:
            print(f"{name:<11} {r['ingest_s'] * 1e3:7.1f}ms {r['in_process_s'] * 1e3:7.1f}ms "
                  f"{r['isolation_overhead_s'] * 1e3:8.1f}ms {r['frames_per_s']:6.1f} "
                  f"{r['ingest_with_timeline_4fps_s'] * 1e3:8.1f}ms")
        elif "direct_s" in r:
            print(f"{name:<11} {'':>9} {r['direct_s'] * 1e3:7.1f}ms  (direct, full resolution)")
        else:
            print(f"{name:<11} {r['skipped']}")
    print(f"per-call overhead (0.5 s wav): {results['per_call_overhead_s'] * 1e3:.1f} ms   -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

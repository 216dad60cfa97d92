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
from engines.ingest.pool import get_pool  # noqa: E402
from xemo.settings import IngestSettings  # noqa: E402


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_media(d: Path) -> tuple[Path, Path]:
    """A 10 s 1280x720 30 fps h264 clip with 44.1 kHz stereo AAC (default GOP, like a phone export), and a
    0.5 s wav for the fixed per-call overhead."""
    clip, tiny = d / "clip720.mp4", d / "tiny.wav"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=1280x720:rate=30:duration=10",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=220:sample_rate=44100:duration=10",
        "-ac",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        str(clip),
    )
    ffmpeg("-f", "lavfi", "-i", "sine=d=0.5:sample_rate=16000", "-c:a", "pcm_s16le", str(tiny))
    return clip, tiny


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (all threads) of this process, or of a worker process by pid."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(fns: dict[str, Callable[[], Any]], runs: int, worker: Callable[[], int]) -> dict[str, dict[str, Any]]:
    """Alternate the variants run by run (so load drift hits all alike); wall and CPU seconds per run.
    CPU time (this process + the decoder worker) barely moves with other load on a shared machine."""
    for fn in fns.values():
        fn()  # warm: page cache, FFmpeg tables, the worker's first job
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            pid = worker()
            c0, w0, t0 = cpu_s(), cpu_s(pid), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(cpu_s() - c0 + (cpu_s(pid) - w0 if worker() == pid else 0.0))
    return {
        k: {
            "wall_median_s": round(statistics.median(wall[k]), 4),
            "wall_min_s": round(min(wall[k]), 4),
            "cpu_median_s": round(statistics.median(cpu[k]), 4),
            "wall_runs_s": [round(x, 4) for x in wall[k]],
        }
        for k in fns
    }


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

    r = measure({"direct": once}, runs, worker=lambda: os.getpid())["direct"]
    return {**r, "note": "full-resolution frames, in-process, no limits"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = ap.parse_args()

    results: dict[str, Any] = {
        "task": "16 uniformly sampled RGB frames (long side 720) + mono 16 kHz audio from a 10 s 1280x720 "
        "30 fps h264/AAC clip",
        "runs": args.runs,
        "statistic": "median seconds",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "decoders": {},
    }
    with tempfile.TemporaryDirectory(prefix="xemo-bench-ingest-") as tmp:
        clip, tiny = make_media(Path(tmp))
        base = IngestSettings(timeline_fps=0.0, decode_workers=1)
        warmup(base)
        pool = get_pool(base.decode_workers, base.worker_memory_mb, base.worker_nice)

        def worker() -> int:
            return pool.pids()[0]

        for decoder in ("decord", "pyav"):
            s = base.model_copy(update={"video_decoder": decoder})
            st = s.model_copy(update={"timeline_fps": 4.0})
            r = measure(
                {
                    "ingest": lambda s=s: ingest(clip, None, s),
                    "in_process": lambda s=s: in_process(clip, "mp4", s),
                    "ingest_timeline_4fps": lambda st=st: ingest(clip, None, st),
                },
                args.runs,
                worker,
            )
            e2e, direct = r["ingest"], r["in_process"]
            results["decoders"][decoder] = {
                **r,
                "isolation_overhead_wall_s": round(e2e["wall_median_s"] - direct["wall_median_s"], 4),
                "isolation_overhead_cpu_s": round(e2e["cpu_median_s"] - direct["cpu_median_s"], 4),
                "frames_per_s": round(16 / e2e["wall_median_s"], 1),
            }
        tc = torchcodec_direct(clip, args.runs)
        results["decoders"]["torchcodec"] = tc or {"skipped": "torchcodec is not installed"}
        r = measure(
            {
                "ingest": lambda: ingest(tiny, None, base),
                "in_process": lambda: process({"video": str(tiny), "video_fmt": "wav", "decoder": "pyav"}, base),
            },
            args.runs,
            worker,
        )
        results["tiny_wav"] = r
        i, d = r["ingest"], r["in_process"]
        results["per_call_overhead_wall_s"] = round(i["wall_median_s"] - d["wall_median_s"], 4)
        results["per_call_overhead_cpu_s"] = round(i["cpu_median_s"] - d["cpu_median_s"], 4)
        results["load_average_1m"] = os.getloadavg()[0]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"{'decoder':<11} {'ingest wall':>12} {'(min)':>8} {'ingest cpu':>11} {'in-proc wall':>13} "
        f"{'in-proc cpu':>12} {'+timeline wall':>15}"
    )
    for name, r in results["decoders"].items():
        if "ingest" in r:
            i, d, t = r["ingest"], r["in_process"], r["ingest_timeline_4fps"]
            print(
                f"{name:<11} {i['wall_median_s'] * 1e3:10.1f}ms {i['wall_min_s'] * 1e3:6.1f}ms "
                f"{i['cpu_median_s'] * 1e3:9.1f}ms {d['wall_median_s'] * 1e3:11.1f}ms "
                f"{d['cpu_median_s'] * 1e3:10.1f}ms "
                f"{t['wall_median_s'] * 1e3:13.1f}ms"
            )
        elif "wall_median_s" in r:
            print(f"{name:<11} {r['wall_median_s'] * 1e3:10.1f}ms  (direct, full resolution, in-process)")
        else:
            print(f"{name:<11} {r['skipped']}")
    print(
        f"per-call overhead (0.5 s wav): wall {results['per_call_overhead_wall_s'] * 1e3:.1f} ms, "
        f"cpu {results['per_call_overhead_cpu_s'] * 1e3:.1f} ms; load average {results['load_average_1m']:.1f}"
        f" -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

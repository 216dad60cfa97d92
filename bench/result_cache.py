"""The result cache: latency of a miss (the whole analysis) against a hit (a replay) on one real server.

Starts `xemo serve` with `server.result_cache_entries` on, then for each of N distinct transcripts sends the same
greedy request twice over HTTP (JSON): the first is a miss, the second a hit (checked by `X-Xemo-Cache`).

    .venv/bin/python bench/result_cache.py [--pairs 6]   # bench/results/result_cache.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import media  # noqa: E402  (tests/media.py: real media made by ffmpeg and espeak-ng)
from servers import ServerProcess  # noqa: E402  (tests/servers.py: a real `xemo serve` process)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "result_cache.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        clip = media.testsrc_clip(d / "clip.mp4", audio=media.speech(d / "speech.wav")).read_bytes()
        srv = ServerProcess({"XEMO_SERVER__RESULT_CACHE_ENTRIES": str(4 * args.pairs)}, d / "server.log")
        try:
            srv.wait_ready()
            times: dict[str, list[float]] = {"miss": [], "hit": []}
            for i in range(args.pairs):
                form = {"transcript": f"take {i}: we actually won", "temperature": "0"}
                for expected in ("miss", "hit"):
                    t = time.perf_counter()
                    r = httpx.post(srv.url + "/v1/analyze", files={"video": ("c.mp4", clip)}, data=form, timeout=120)
                    times[expected].append(time.perf_counter() - t)
                    got = r.headers.get("x-xemo-cache")
                    if r.status_code != 200 or got != expected:
                        raise SystemExit(f"request {i}: status {r.status_code}, cache {got}, expected {expected}")
        finally:
            srv.stop()
    miss, hit = statistics.median(times["miss"]), statistics.median(times["hit"])
    result = {
        "clip": "4 s 320x240 test pattern + espeak speech (tests/media.py)",
        "pairs": args.pairs,
        "miss_median_s": round(miss, 4),
        "hit_median_s": round(hit, 4),
        "miss_over_hit": round(miss / hit, 1),
        "all_s": {k: [round(v, 4) for v in vs] for k, vs in times.items()},
        "machine": platform.platform(),
    }
    print(f"miss median {miss:.3f} s, hit median {1000 * hit:.1f} ms, ratio {miss / hit:.0f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

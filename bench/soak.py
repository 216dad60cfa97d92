"""Soak test: open-loop arrivals at a fraction of measured capacity for a long time, against a real server.

It starts one `xemo serve` process (the tuned configuration of bench/load.py, with the API key and result cache
of its Redis comparison, so every request pays the limit check and a cache miss), measures capacity, then sends
requests at `--load` (default 0.8) of it for `--minutes` (default 30). Capacity is the CPU bound: cores divided by
the CPU-seconds one request costs over every server process (the server and its decoder workers, from /proc),
measured on `--calibrate` sequential warm requests, or the closed-loop throughput of `--concurrency` clients
when that is lower (on a shared machine the server does not get every core). Every request streams SSE with its
own transcript, as in bench/load.py, so neither cache helps. The server's log is kept in the temp folder.

While it runs it samples the resident memory of every server process every `--sample-s` seconds and reports, per
process, the memory slope in MB per hour (least squares after the warm-up share `--warmup`), plus per-minute
throughput and latency. Any 5xx, stream error or unfinished request fails the run (exit 1). Writes
bench/results/soak.json.

    .venv/bin/python bench/soak.py                          # 30 minutes at 80 % of capacity
    .venv/bin/python bench/soak.py --minutes 3 --out /tmp/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from load import CONFIGS, KEY, SHARED_STATE, make_clip, one_request, pct  # noqa: E402
from procs import cpu_s, tree  # noqa: E402
from servers import ServerProcess  # noqa: E402

from xemo.client import AsyncClient  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid: int) -> tuple[str, float] | None:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return name, pages * PAGE / 2**20


def slope_mb_per_h(samples: list[tuple[float, float]]) -> float | None:
    if len(samples) < 5:
        return None
    t, m = np.array(samples).T
    if t[-1] - t[0] < 60:
        return None
    return round(float(np.polyfit(t / 3600.0, m, 1)[0]), 2)


async def calibrate(
    client: AsyncClient, root: int, clip: bytes, n: int, max_tokens: int, concurrency: int
) -> dict[str, Any]:
    """Capacity: the lower of the CPU bound and the closed-loop throughput at `concurrency` (on a shared machine
    the server does not get every core, and the CPU bound alone would overload it)."""
    for i in range(2):  # warm-up: first requests load lazy parts
        await one_request(client, clip, max_tokens, i)
    c0, t0 = cpu_s(tree(root)), time.perf_counter()
    recs = [await one_request(client, clip, max_tokens, 100 + i) for i in range(n)]
    c1, t1 = cpu_s(tree(root)), time.perf_counter()
    per_req = (c1 - c0) / n
    bound = (os.cpu_count() or 1) / per_req
    todo = iter(range(200, 200 + n * concurrency))
    closed: list[dict[str, Any]] = []

    async def worker() -> None:
        for i in todo:
            closed.append(await one_request(client, clip, max_tokens, i))

    t2 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    closed_thr = sum(1 for r in closed if "e2e_s" in r) / (time.perf_counter() - t2)
    return {"requests": n, "cpu_s_per_request": round(per_req, 3), "wall_s_per_request": round((t1 - t0) / n, 3),
            "e2e_s": pct([r["e2e_s"] for r in recs if "e2e_s" in r]), "cpu_bound_per_s": round(bound, 3),
            "closed_loop_concurrency": concurrency, "closed_loop_per_s": round(closed_thr, 3),
            "capacity_per_s": round(min(bound, closed_thr), 3)}


async def soak(url: str, root: int, clip: bytes, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with AsyncClient(url, api_key=KEY, timeout=args.timeout, max_retries=0, limits=limits) as client:
        cal = await calibrate(client, root, clip, args.calibrate, args.max_tokens, args.concurrency)
        rate = args.load * cal["capacity_per_s"]
        print(f"capacity {cal['capacity_per_s']}/s ({cal['cpu_s_per_request']} CPU-s per request); "
              f"soaking at {rate:.3f}/s for {args.minutes} min", flush=True)
        memory: dict[int, dict[str, Any]] = {}
        records: list[dict[str, Any]] = []
        tasks: list[asyncio.Task] = []
        duration = args.minutes * 60.0
        t0 = time.perf_counter()
        next_sample = 0.0
        next_report = 60.0
        cpu0 = cpu_s(tree(root))

        async def timed(i: int) -> None:
            start = time.perf_counter() - t0
            rec = await one_request(client, clip, args.max_tokens, 1000 + i)
            rec["start_s"] = start
            records.append(rec)

        i = 0
        while (now := time.perf_counter() - t0) < duration:
            if now >= next_sample:
                for p in tree(root):
                    if (r := rss_mb(p)) is not None:
                        memory.setdefault(p, {"name": r[0], "samples": []})["samples"].append((now, r[1]))
                next_sample += args.sample_s
            if now >= next_report:
                last = [r for r in records if r["start_s"] >= now - 60]
                bad = sum(1 for r in records if not (r["status"] == 200 and "e2e_s" in r))
                e2e = pct([r["e2e_s"] for r in last if "e2e_s" in r])
                mem = sum(m["samples"][-1][1] for m in memory.values() if m["samples"][-1][0] >= now - args.sample_s)
                print(f"  {now / 60:5.1f} min  sent {i}  done {len(records)}  bad {bad}  last-minute e2e p50/p95 "
                      f"{e2e['p50']}/{e2e['p95']} s  RSS {mem:.0f} MB  load {os.getloadavg()[0]:.1f}", flush=True)
                next_report += 60.0
            due = i / rate
            if now >= due:
                tasks.append(asyncio.create_task(timed(i)))
                i += 1
            else:
                await asyncio.sleep(min(due - now, 0.5))
        done, pending = await asyncio.wait(tasks, timeout=args.timeout) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        for _ in pending:
            records.append({"status": "unfinished"})
        wall = time.perf_counter() - t0
        cpu = cpu_s(tree(root)) - cpu0
    ok = [r for r in records if r["status"] == 200 and "e2e_s" in r]
    errors: dict[str, int] = {}
    for r in records:
        if not (r["status"] == 200 and "e2e_s" in r):
            errors[str(r["status"])] = errors.get(str(r["status"]), 0) + 1
    five_xx = sum(n for s, n in errors.items() if s.isdigit() and int(s) >= 500)
    warm = args.warmup * duration
    processes = []
    for pid, m in sorted(memory.items()):
        after = [(t, v) for t, v in m["samples"] if t >= warm]
        processes.append({"pid": pid, "name": m["name"], "root": pid == root, "samples": len(m["samples"]),
                          "first_s": round(m["samples"][0][0], 1), "last_s": round(m["samples"][-1][0], 1),
                          "rss_mb_first": round(m["samples"][0][1], 1), "rss_mb_last": round(m["samples"][-1][1], 1),
                          "rss_mb_max": round(max(v for _, v in m["samples"]), 1),
                          "slope_mb_per_h_after_warmup": slope_mb_per_h(after)})
    minutes = []
    for k in range(int(np.ceil(duration / 60))):
        rs = [r for r in ok if k * 60 <= r["start_s"] < (k + 1) * 60]
        minutes.append({"minute": k + 1, "ok": len(rs), "e2e_s": pct([r["e2e_s"] for r in rs]),
                        "time_to_label_s": pct([r["label_s"] for r in rs if "label_s" in r])})
    return {"calibration": cal, "rate_per_s": round(rate, 3), "sent": i, "ok": len(ok), "errors": errors,
            "five_xx": five_xx, "wall_s": round(wall, 1), "throughput_per_s": round(len(ok) / wall, 3),
            "cpu_s_per_request_under_load": round(cpu / max(len(ok), 1), 3),
            "e2e_s": pct([r["e2e_s"] for r in ok]), "ttft_s": pct([r["ttft_s"] for r in ok if "ttft_s" in r]),
            "time_to_label_s": pct([r["label_s"] for r in ok if "label_s" in r]),
            "processes": processes, "minutes": minutes}


def _interrupt(sig: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity")
    ap.add_argument("--calibrate", type=int, default=6, help="sequential requests that measure CPU per request")
    ap.add_argument("--concurrency", type=int, default=4, help="closed-loop clients of the capacity measurement")
    ap.add_argument("--sample-s", type=float, default=10.0, help="seconds between memory samples")
    ap.add_argument("--warmup", type=float, default=0.2, help="share of the run left out of the memory slopes")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--timeout", type=float, default=120.0, help="per request, and for the stragglers at the end")
    ap.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    env = {**CONFIGS["tuned"], **SHARED_STATE}
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp)).read_bytes()
        srv = ServerProcess(env, Path(tmp) / "server.log")
        try:
            srv.wait_ready(timeout=600)
            load_start = os.getloadavg()
            result = asyncio.run(soak(srv.url, srv.proc.pid, clip, args))
        finally:
            srv.stop(90)
            log = Path(tempfile.gettempdir()) / "xemo-soak-server.log"
            log.write_bytes(srv.log_path.read_bytes()[-200_000:])  # the tail, to explain any failure
            print(f"server log: {log}")
    doc = {"bench": "soak", "minutes": args.minutes, "load_fraction": args.load, "config": env,
           "cpus": os.cpu_count(), "load_average_at_start": load_start, "load_average_at_end": os.getloadavg(),
           **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k] for k in ("rate_per_s", "sent", "ok", "errors", "five_xx", "throughput_per_s",
                                          "e2e_s", "time_to_label_s")}, indent=2))
    for p in doc["processes"]:
        print(f"  pid {p['pid']} {p['name']}: RSS {p['rss_mb_first']} -> {p['rss_mb_last']} MB "
              f"(max {p['rss_mb_max']}), slope after warm-up {p['slope_mb_per_h_after_warmup']} MB/h")
    print(f"wrote {args.out}")
    bad = sum(doc["errors"].values())
    if bad:
        print(f"FAILED: {bad} requests without a complete answer ({doc['errors']})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

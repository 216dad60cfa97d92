"""Open-loop load benchmark of the server: unbatched vs. tuned batching, one process vs. two sharing Redis, or one
process vs. the Ray app.

Requests arrive at a constant rate whatever the server does (open loop: overload shows up as latency and
errors, not as a politely slower client). For each target concurrency c in --levels the arrival rate is
c / S, where S is the unloaded end-to-end latency measured first (Little's law: c requests in flight on
average when the server keeps up). Each level is bounded by --duration seconds and --max-requests requests,
then waits for the stragglers (bounded too). Every request streams SSE from /v1/analyze, so the client sees
the label and the first token as they happen. Only 127.0.0.1 is ever contacted. For the servers it starts, each
level also reports the CPU their process trees spent (/proc: the server and its decoder workers) per request, and
the throughput over the CPU bound (cores / CPU-s per request at that level), which is the share of the cores the
server kept busy. Then (`--saturate K`, on by default) K closed-loop clients per configuration keep it saturated,
and only a window after they settle counts: throughput at saturation with no ramp and no drain, the CPU per request
and the share of the cores, the same way.

`--compare batching` (the default) starts two server processes, unbatched (max_batch_size=1, max_num_seqs=1)
and tuned batching; both stay up (they run the same code and each level runs on both back to back, so the
machine's background load hits both alike), runs the same levels against both and writes both and their ratio
to bench/results/load.json. `--compare redis` runs the tuned configuration as one process (in-process cache and
limits) and as two processes sharing a private redis-server (result cache, rate limits and job state in Redis),
the requests alternating between the two (client-side round robin: no balancer here), and writes
bench/results/load_redis.json. Both use an API key with a limit far above the load, so every request pays the
limit check and the cache lookup of its configuration. Every request's transcript differs, so the LLM's prefix
cache helps only with the shared instructions and the result cache never hits, as in real traffic.
`--compare ray` runs the tuned single process and `xemo serve --ray` (its own local Ray, the same knobs) and also
measures Ray's added latency per request at concurrency 1: sequential requests alternating between the two,
median of each, the difference (bench/results/load_ray.json). With --url it measures one already running server
instead (no ratio).

    .venv/bin/python bench/load.py                      # about 10 minutes on 2 cores
    .venv/bin/python bench/load.py --levels 1,4 --duration 15
    .venv/bin/python bench/load.py --levels "" --out bench/results/load_saturation.json   # saturation alone
    .venv/bin/python bench/load.py --compare redis --levels 1,2,4
    .venv/bin/python bench/load.py --compare ray --levels 1,2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import media  # noqa: E402  (tests/media.py: real media made by ffmpeg and espeak-ng)
from procs import tree_cpu_s  # noqa: E402
from servers import RedisProcess, ServerProcess  # noqa: E402  (tests/servers.py: real server / redis processes)

from xemo.client import ApiError, AsyncClient  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# Only the batching knobs differ. On the 2-core CPU box the LLM's work is mostly prefill (compute-bound either
# way); with 8 running requests and 8 LLM sequences, prefills interleaved with everyone's decode steps and most
# requests missed the grace period under background load, so both configurations cap running requests at 4.
COMMON = {"XEMO_SERVER__MAX_RUNNING": "4", "XEMO_SERVER__MAX_QUEUE": "32"}
CONFIGS = {
    "unbatched": {**COMMON, "XEMO_SERVER__MAX_BATCH_SIZE": "1", "XEMO_SERVER__MAX_NUM_SEQS": "1"},
    "tuned": {
        **COMMON,
        "XEMO_SERVER__MAX_BATCH_SIZE": "8",
        "XEMO_SERVER__MAX_NUM_SEQS": "4",
        "XEMO_SERVER__MAX_QUEUE_DELAY_MS": "0",
    },
}

KEY = "bench-key"
# An API key whose limit the benchmark never reaches, and the cache on: only where they live differs.
SHARED_STATE = {
    "XEMO_SERVER__API_KEYS": f'["{KEY}"]',
    "XEMO_SERVER__RATE_LIMIT_PER_S": "10000",
    "XEMO_SERVER__RATE_LIMIT_BURST": "10000",
    "XEMO_SERVER__RESULT_CACHE_ENTRIES": "256",
}
REDIS_CONFIGS = {
    "one_process": {**CONFIGS["tuned"], **SHARED_STATE},
    "two_processes_redis": {**CONFIGS["tuned"], **SHARED_STATE},
}
PROCESSES = {"one_process": 1, "two_processes_redis": 2}
# The Ray app with the tuned knobs: ingress, one replica per stage, the LLM in its own process. Its OpenMP
# threads wait passively here as in the single process (--ray-omp ACTIVE to measure spinning): on a shared box an
# ACTIVE LLM keeps its threads spinning even between requests, which slows every other process.
RAY_CONFIGS = {
    "tuned": CONFIGS["tuned"],
    "ray": {**CONFIGS["tuned"], "XEMO_RAY__NUM_CPUS": "2", "XEMO_RAY__OBJECT_STORE_MB": "128"},
}
SERVE_ARGS = {"ray": ["--ray"]}


def make_clip(out_dir: Path) -> Path:
    """The test suite's real media: the astronaut photo zoomed (a face) with espeak speech as its track."""
    speech = media.speech(out_dir / "speech.wav")
    face = media.face_image(out_dir / "face.png")
    return media.face_clip(out_dir / "clip.mp4", face, seconds=3.0, audio=speech)


_TAKES = itertools.count()  # every request's prompt differs, so no two share the LLM's prefix cache fully
TRANSCRIPTS = [
    "I cannot believe you did this again.",
    "Well, that went better than I expected.",
    "Please just leave me alone for a while.",
    "Wait, you are telling me this only now?",
]


async def stamp(events: Any, t0: float, rec: dict[str, Any], keep_answer: bool = False) -> None:
    """Read a stream of events into `rec`: seconds from `t0` to the label (label_s), the first token (ttft_s) and
    the done event (e2e_s, with the answer when `keep_answer`); status 200, or "stream_error" after an error event."""
    async for ev in events:
        rec["status"] = 200
        now = time.perf_counter() - t0
        if ev.type == "label":
            rec["label_s"] = now
        elif ev.type == "token" and "ttft_s" not in rec:
            rec["ttft_s"] = now
        elif ev.type == "done":
            rec["e2e_s"] = now
            if keep_answer:
                rec["answer"] = ev.answer
        elif ev.type == "error":
            rec["status"] = "stream_error"


async def one_request(client: AsyncClient, clip: bytes, max_tokens: int, i: int) -> dict[str, Any]:
    """One streamed analysis through xemo.client (no retries: an open-loop client counts refusals as errors)."""
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"status": None}
    try:
        events = client.stream(
            video=clip,
            max_tokens=max_tokens,
            temperature=0,
            transcript=f"{TRANSCRIPTS[i % len(TRANSCRIPTS)]} (take {next(_TAKES)})",
            raise_on_error=False,
        )
        await stamp(events, t0, rec)
    except ApiError as e:
        rec["status"] = e.status or e.type
    except httpx.HTTPError as e:
        rec["status"] = type(e).__name__
    return rec


def clients(urls: list[str], timeout: float, limits: httpx.Limits | None = None) -> list[AsyncClient]:
    """One client per server process (the benchmark's own round robin: no balancer here), all with the API key."""
    extra = {"limits": limits} if limits is not None else {}
    return [AsyncClient(u, api_key=KEY, timeout=timeout, max_retries=0, **extra) for u in urls]


def roots_cpu_s(roots: list[int] | None) -> float:
    """CPU-seconds the servers' process trees (the servers and their decoder workers) have spent so far."""
    return sum(tree_cpu_s(p) for p in roots) if roots else 0.0


def cpu_share(cpu: float, answered: int, seconds: float) -> dict[str, float | None]:
    """`cpu` CPU-s spent over `seconds` answering `answered` requests, against the CPU bound: cores / CPU-s per
    request. Throughput over that bound is the share of the cores kept busy."""
    cores = os.cpu_count() or 1
    return {"cpu_s_per_request": round(cpu / answered, 3),
            "cpu_bound_per_s": round(cores * answered / cpu, 3) if cpu > 0 else None,
            "throughput_over_cpu_bound": round(cpu / (seconds * cores), 3)}


async def run_level(
    urls: list[str], clip: bytes, rate: float, duration: float, max_requests: int, max_tokens: int, grace: float,
    roots: list[int] | None = None,
) -> dict[str, Any]:
    """One level against one server, or round robin over several processes sharing Redis. With the servers'
    pids (`roots`), also the CPU their process trees spent, per request and against the CPU bound."""
    n = max(1, min(max_requests, int(round(rate * duration))))
    cpu0 = roots_cpu_s(roots)
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    async with contextlib.AsyncExitStack() as stack:
        cs = [await stack.enter_async_context(c) for c in clients(urls, grace + duration, limits)]
        t0 = time.perf_counter()
        tasks = []
        for i in range(n):  # constant arrival rate, independent of completions
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one_request(cs[i % len(cs)], clip, max_tokens, i)))
        probe = asyncio.create_task(probe_latency(cs[0].http))
        done, pending = await asyncio.wait(tasks, timeout=grace)
        probe.cancel()
        probes = await asyncio.gather(probe, return_exceptions=True)
        for t in pending:
            t.cancel()
        recs = [t.result() for t in done] + [{"status": "unfinished"} for _ in pending]
        wall = time.perf_counter() - t0
    out = summarize(recs, wall, rate)
    if roots and out["ok"]:
        out.update(cpu_share(roots_cpu_s(roots) - cpu0, out["ok"], wall))
    lat = probe_samples(probes[0])
    out["livez_ms"] = {"max": round(max(lat), 1) if lat else None, **{k: v for k, v in pct(lat).items()}}
    return out


async def saturate(
    urls: list[str], clip: bytes, clients_n: int, duration: float, settle: float, max_tokens: int, grace: float,
    roots: list[int] | None = None,
) -> dict[str, Any]:
    """Closed loop: `clients_n` clients each send the next request as soon as theirs is answered, so the server is
    never short of work. Only the window from `settle` s after the start to `settle + duration` s counts (no ramp,
    no drain): the requests answered in it, and with the servers' pids the CPU their trees spent in it."""
    answered: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + settle + duration
    limits = httpx.Limits(max_connections=clients_n + 4, max_keepalive_connections=clients_n + 4)

    async def client_loop(c: AsyncClient, j: int) -> None:
        i = j
        while time.perf_counter() < stop_at:
            rec = await one_request(c, clip, max_tokens, i)
            i += clients_n
            if rec["status"] == 200 and "e2e_s" in rec:
                answered.append(time.perf_counter())
            else:
                errors[str(rec["status"])] = errors.get(str(rec["status"]), 0) + 1

    async with contextlib.AsyncExitStack() as stack:
        cs = [await stack.enter_async_context(c) for c in clients(urls, grace, limits)]
        tasks = [asyncio.create_task(client_loop(cs[j % len(cs)], j)) for j in range(clients_n)]
        await asyncio.sleep(settle)
        t0, cpu0 = time.perf_counter(), roots_cpu_s(roots)
        await asyncio.sleep(duration)
        t1, cpu1 = time.perf_counter(), roots_cpu_s(roots)
        await asyncio.wait(tasks, timeout=grace)
        for t in tasks:
            t.cancel()
    n = sum(t0 <= t < t1 for t in answered)
    out: dict[str, Any] = {"clients": clients_n, "window_s": round(t1 - t0, 2), "answered_in_window": n,
                           "errors": errors, "throughput_per_s": round(n / (t1 - t0), 3)}
    if roots and n:
        out.update(cpu_share(cpu1 - cpu0, n, t1 - t0))
    return out


async def probe_latency(client: httpx.AsyncClient, samples: list[float] | None = None) -> list[float]:
    """/livez round trips (ms) every 100 ms while the level runs: the event loop must stay responsive."""
    samples = [] if samples is None else samples
    try:
        while True:
            t = time.perf_counter()
            await client.get("/livez")
            samples.append(1000 * (time.perf_counter() - t))
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        return samples


def probe_samples(result: Any) -> list[float]:
    return result if isinstance(result, list) else []


def pct(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p95": None, "p99": None}
    a = np.asarray(xs)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}


def summarize(recs: list[dict[str, Any]], wall: float, rate: float) -> dict[str, Any]:
    ok = [r for r in recs if r["status"] == 200 and "e2e_s" in r]
    errors: dict[str, int] = {}
    for r in recs:
        if not (r["status"] == 200 and "e2e_s" in r):
            errors[str(r["status"])] = errors.get(str(r["status"]), 0) + 1
    return {
        "arrival_rate_per_s": round(rate, 3),
        "sent": len(recs),
        "ok": len(ok),
        "errors": errors,
        "wall_s": round(wall, 2),
        "throughput_per_s": round(len(ok) / wall, 3) if wall > 0 else 0.0,
        "e2e_s": pct([r["e2e_s"] for r in ok]),
        "ttft_s": pct([r["ttft_s"] for r in ok if "ttft_s" in r]),
        "time_to_label_s": pct([r["label_s"] for r in ok if "label_s" in r]),
    }


async def measure(
    urls: dict[str, list[str]], clip: bytes, levels: list[int], args: argparse.Namespace,
    roots: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Warm every server up, then run each level on each server back to back (same code, same machine state).

    The arrival rate of level c is c / S, with S the unloaded latency of the first server (the baseline), so
    every configuration sees exactly the same load."""
    out: dict[str, Any] = {}
    for name, bases in urls.items():
        async with contextlib.AsyncExitStack() as stack:  # warm-up (every process) + unloaded latency, one at a time
            cs = [await stack.enter_async_context(c) for c in clients(bases, 120)]
            single = [await one_request(cs[i % len(cs)], clip, args.max_tokens, i) for i in range(2 + len(cs))]
        s = float(np.median([r["e2e_s"] for r in single[len(bases) :] if "e2e_s" in r] or [5.0]))
        out[name] = {"unloaded_e2e_s": round(s, 3), "levels": {}}
    service_s = out[next(iter(urls))]["unloaded_e2e_s"]
    for c in levels:
        rate = c / service_s
        for name, bases in urls.items():
            res = await run_level(bases, clip, rate, args.duration, args.max_requests, args.max_tokens, args.grace,
                                  (roots or {}).get(name))
            out[name]["levels"][str(c)] = res
            print(
                f"  {name:<19} c={c:<2} rate={rate:.2f}/s sent={res['sent']} ok={res['ok']} errors={res['errors']} "
                f"thr={res['throughput_per_s']}/s e2e p50/p95={res['e2e_s']['p50']}/{res['e2e_s']['p95']} "
                f"ttft p50={res['ttft_s']['p50']} label p50={res['time_to_label_s']['p50']} "
                f"cpu/req={res.get('cpu_s_per_request')} of CPU bound={res.get('throughput_over_cpu_bound')}",
                flush=True,
            )
    if args.saturate:
        for name, bases in urls.items():
            res = await saturate(bases, clip, args.saturate, args.duration, args.settle, args.max_tokens, args.grace,
                                 (roots or {}).get(name))
            out[name]["saturation"] = res
            print(f"  {name:<19} saturated by {args.saturate} closed-loop clients: thr={res['throughput_per_s']}/s "
                  f"cpu/req={res.get('cpu_s_per_request')} of CPU bound={res.get('throughput_over_cpu_bound')} "
                  f"errors={res['errors']}", flush=True)
    for name, bases in urls.items():
        async with httpx.AsyncClient(timeout=30) as c:
            out[name]["mean_batch_size"] = mean_batch_sizes((await c.get(bases[0] + "/metrics")).text)
        print(f"  {name}: mean batch size per stage: {out[name]['mean_batch_size']}", flush=True)
    return out


def mean_batch_sizes(text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        for kind, acc in (("_sum", sums), ("_count", counts)):
            if line.startswith("xemo_batch_size" + kind + "{"):
                stage = line.split('stage="', 1)[1].split('"', 1)[0]
                acc[stage] = float(line.rsplit(" ", 1)[1])
    return {k: round(sums[k] / counts[k], 2) for k in sums if counts.get(k)}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def compare(unb: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for c, t in tuned["levels"].items():
        u = unb["levels"][c]
        out[c] = {
            "throughput_tuned_over_unbatched": ratio(t["throughput_per_s"], u["throughput_per_s"]),
            "e2e_p50_tuned_over_unbatched": ratio(t["e2e_s"]["p50"], u["e2e_s"]["p50"]),
            "e2e_p95_tuned_over_unbatched": ratio(t["e2e_s"]["p95"], u["e2e_s"]["p95"]),
            "ttft_p50_tuned_over_unbatched": ratio(t["ttft_s"]["p50"], u["ttft_s"]["p50"]),
            "p95_over_p50_unbatched": ratio(u["e2e_s"]["p95"], u["e2e_s"]["p50"]),
            "p95_over_p50_tuned": ratio(t["e2e_s"]["p95"], t["e2e_s"]["p50"]),
        }
    return out


def table(results: dict[str, Any]) -> str:
    rows = [
        "| config | c | rate/s | ok/sent | errors | thr/s | e2e p50 | e2e p95 | e2e p99 | TTFT p50 | TTFT p95 "
        "| label p50 | label p95 | livez p99 ms | CPU-s/req | of CPU bound |",
        "|" + "---|" * 16,
    ]
    for name in ("unbatched", "tuned", *REDIS_CONFIGS, "ray", "server"):
        if name not in results:
            continue
        for c, r in results[name]["levels"].items():
            rows.append(
                f"| {name} | {c} | {r['arrival_rate_per_s']} | {r['ok']}/{r['sent']} | "
                f"{sum(r['errors'].values())} | {r['throughput_per_s']} | {r['e2e_s']['p50']} | "
                f"{r['e2e_s']['p95']} | {r['e2e_s']['p99']} | {r['ttft_s']['p50']} | {r['ttft_s']['p95']} | "
                f"{r['time_to_label_s']['p50']} | {r['time_to_label_s']['p95']} | {r['livez_ms']['p99']} | "
                f"{r.get('cpu_s_per_request')} | {r.get('throughput_over_cpu_bound')} |"
            )
        sat = results[name].get("saturation")
        if sat:
            rows.append(f"| {name} | closed loop x{sat['clients']} | - | {sat['answered_in_window']} in "
                        f"{sat['window_s']} s | {sum(sat['errors'].values())} | {sat['throughput_per_s']} |"
                        + " - |" * 8 + f" {sat.get('cpu_s_per_request')} | {sat.get('throughput_over_cpu_bound')} |")
    return "\n".join(rows)


def compare_redis(one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for c, t in two["levels"].items():
        o = one["levels"][c]
        out[c] = {
            "throughput_two_over_one": ratio(t["throughput_per_s"], o["throughput_per_s"]),
            "e2e_p50_two_over_one": ratio(t["e2e_s"]["p50"], o["e2e_s"]["p50"]),
            "e2e_p95_two_over_one": ratio(t["e2e_s"]["p95"], o["e2e_s"]["p95"]),
            "ttft_p50_two_over_one": ratio(t["ttft_s"]["p50"], o["ttft_s"]["p50"]),
        }
    return out


async def added_latency(base: str, other: str, clip: bytes, n: int, max_tokens: int) -> dict[str, Any]:
    """Sequential requests alternating between two servers; median per server and the difference (other - base)."""
    recs: dict[str, list[dict[str, Any]]] = {base: [], other: []}
    async with contextlib.AsyncExitStack() as stack:
        cs = dict(zip((base, other), [await stack.enter_async_context(c) for c in clients([base, other], 300)],
                      strict=True))
        for i in range(n):
            for url in (base, other) if i % 2 == 0 else (other, base):
                recs[url].append(await one_request(cs[url], clip, max_tokens, i))
    out: dict[str, Any] = {"requests_each": n}
    for key in ("e2e_s", "label_s", "ttft_s"):
        med = {u: float(np.median(v)) if (v := [r[key] for r in rs if key in r]) else None for u, rs in recs.items()}
        out[key] = {"single_process": med[base], "ray": med[other],
                    "added": round(med[other] - med[base], 4) if None not in med.values() else None}
    return out


def start_servers(
    configs: dict[str, dict[str, str]], tmp: Path, redis_url: str | None, servers: dict[str, list[ServerProcess]]
) -> None:
    """Start every configuration's processes into `servers` (filled as they start, so the caller stops them all
    whatever fails), then wait until each is ready."""
    for name, env in configs.items():
        n = PROCESSES.get(name, 1)
        if n > 1:
            assert redis_url is not None
            env = {**env, "XEMO_REDIS_URL": redis_url, "XEMO_REDIS__KEY_PREFIX": f"bench-{os.getpid()}"}
        print(f"{name}: starting {n} server process(es)", flush=True)
        if name == "ray":
            env = {**env, "RAY_TMPDIR": tempfile.mkdtemp(prefix="xray", dir="/tmp")}
        servers[name] = [ServerProcess(env, tmp / f"{name}-{i}.log", SERVE_ARGS.get(name)) for i in range(n)]
    for procs in servers.values():
        for p in procs:
            p.wait_ready(timeout=1200)  # several loading at once on a loaded box


def _interrupt(sig: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="measure this running server (127.0.0.1 only) instead of starting two")
    ap.add_argument("--levels", default="1,4,8", help="target concurrent clients, comma-separated")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals per level")
    ap.add_argument("--max-requests", type=int, default=40, help="cap on requests per level")
    ap.add_argument("--grace", type=float, default=80.0, help="max seconds to wait for a level to finish")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--saturate", type=int, default=6, metavar="K",
                    help="then K closed-loop clients per configuration: throughput at saturation (0 = skip)")
    ap.add_argument("--settle", type=float, default=8.0, help="seconds of saturation before its window opens")
    ap.add_argument("--compare", choices=("batching", "redis", "ray"), default="batching")
    ap.add_argument("--out", type=Path, help="default bench/results/load.json (load_<compare>.json otherwise)")
    ap.add_argument("--ray-latency-requests", type=int, default=8, help="per server, for Ray's added latency")
    ap.add_argument("--ray-omp", default="PASSIVE", choices=["PASSIVE", "ACTIVE"], help="the LLM replica's policy")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # so the servers started here are stopped too
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    configs = {"batching": CONFIGS, "redis": REDIS_CONFIGS, "ray": RAY_CONFIGS}[args.compare]
    if args.compare == "ray":
        if importlib.util.find_spec("ray") is None:
            raise SystemExit("ray is not installed: pip install '.[ray]'")
        configs = {**configs, "ray": {**configs["ray"], "XEMO_RAY__LLM_OMP_WAIT_POLICY": args.ray_omp}}
    args.out = args.out or RESULTS / ("load.json" if args.compare == "batching" else f"load_{args.compare}.json")
    results: dict[str, Any] = {
        "settings": {
            "levels": levels,
            "duration_s": args.duration,
            "max_requests": args.max_requests,
            "max_tokens": args.max_tokens,
            "configs": configs,
            "processes": {n: PROCESSES.get(n, 1) for n in configs},
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp)).read_bytes()
        if args.url:
            if urlparse(args.url).hostname not in ("127.0.0.1", "localhost"):
                raise SystemExit("only 127.0.0.1 may be benchmarked")
            results.update(asyncio.run(measure({"server": [args.url]}, clip, levels, args)))
        else:
            # All servers run for the whole benchmark (an idle one costs no CPU): they load the same code,
            # even in a working tree that changes meanwhile, and each level runs on all back to back.
            redis = RedisProcess(Path(tmp) / "redis.log") if args.compare == "redis" else None
            servers: dict[str, list[ServerProcess]] = {}
            try:
                start_servers(configs, Path(tmp), redis.url if redis else None, servers)
                urls = {n: [p.url for p in procs] for n, procs in servers.items()}
                roots = {n: [p.proc.pid for p in procs] for n, procs in servers.items()}
                results.update(asyncio.run(measure(urls, clip, levels, args, roots)))
                if args.compare == "ray":
                    results["ray_added_latency_c1"] = asyncio.run(added_latency(
                        urls["tuned"][0], urls["ray"][0], clip, args.ray_latency_requests, args.max_tokens))
            finally:
                for procs in servers.values():
                    for srv in procs:
                        srv.stop(90)
                if redis is not None:
                    redis.stop()
            if args.compare == "batching":
                results["ratio"] = compare(results["unbatched"], results["tuned"])
            elif args.compare == "redis":
                results["ratio"] = compare_redis(results["one_process"], results["two_processes_redis"])
        results["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    if "ratio" in results:
        print(json.dumps(results["ratio"], indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

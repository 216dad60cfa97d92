"""LLM backend benchmark on the SmolLM2-135M-Instruct GGUF: multimodal prefill, batched decode, bandwidth bound.

For each runtime (llama_cpp on the Q4_1 GGUF, and on a Q4_0 copy re-quantized by llama.cpp; transformers fp32
and int8 on the same weights dequantized):
- prefill: time to first token for a prompt shaped like XEmoGPT's (text, 600 audio soft tokens, text,
  16 video soft tokens, text);
- decode: tokens/s with 1, 4 and 8 concurrent sequences, aggregate and per sequence, from the median time
  between consecutive full-batch decode steps (reported by the backend's step listeners), best of `--repeats`
  runs because other jobs share the cores;
- the memory-bandwidth bound: a decode step must read every weight once, so steps/s <= copy bandwidth / weight
  bytes read per step; the fraction shows how close each runtime gets (KV-cache reads are ignored: they are
  small at these context lengths).

    .venv/bin/python bench/llm.py            # writes bench/results/llm.json and prints a table

`--builds portable,avx2,native-noamx,native` instead compares llama.cpp builds on this machine (what
portability costs): each flag set of tools/llama_cpp_wheel.py is built once into the wheelhouse, installed into
a folder of its own, checked by the preflight (a build that crashes here is recorded as such, not run), then
this script runs on it for llama_cpp Q4_1 alone; the table goes to bench/results/llm_builds.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.llm import LLMBackend, SamplingParams, load_backend, smollm2_gguf_path  # noqa: E402

PROMPT_PARTS = (
    "###Human: Audio content: <Audio>",
    "</Audio> These are frames sampled uniformly from the video: <Video>",
    "</Video> The subtitle of this video is: <Subtitle>I cannot believe you did this again.</Subtitle> "
    "Please infer the person's emotional state and explain which visual, vocal and verbal cues support it. "
    "###Assistant:",
)
N_AUDIO, N_VIDEO = 600, 16


def copy_bandwidth(mb: int = 512, repeats: int = 3) -> float:
    """Bytes/s moved by a numpy copy of an `mb` MB array (read + write counted, as STREAM's copy does)."""
    src = np.ones(mb * 1024 * 1024 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best


def decode_bytes(backend: LLMBackend) -> int:
    """Weight bytes one decode step reads: every weight except the input-embedding table (only one row per
    token is read), unless that table is also the output matrix (tied), as in SmolLM2."""
    if backend.name.startswith("llama_cpp"):
        return int(backend.model_bytes)  # token_embd is the tied output matrix here, read every step
    import torch

    model = backend.model
    emb = model.get_input_embeddings().weight
    total, seen = 0, set()
    for mod in model.modules():
        if isinstance(mod, torch.ao.nn.quantized.dynamic.Linear):
            total += mod.weight().numel()  # int8
            continue
        for p in mod.parameters(recurse=False):
            if id(p) in seen or (p is emb and not _tied(model)):
                continue
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def _tied(model) -> bool:  # noqa: ANN001
    out = model.get_output_embeddings()
    return out is not None and getattr(out, "weight", None) is model.get_input_embeddings().weight


def requantized(gguf: Path, kind: str, cache_dir: Path) -> Path:
    """The GGUF re-quantized by llama.cpp itself (e.g. Q4_1 -> Q4_0, whose weights llama.cpp repacks for
    faster CPU matmuls). Output quality is not measured here: re-quantizing an already quantized file loses some."""
    import llama_cpp

    ftypes = {"q4_0": 2, "q8_0": 7}
    out = cache_dir / f"{gguf.stem}.requant-{kind}.gguf"
    if not out.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype, p.allow_requantize, p.nthread = ftypes[kind], True, 2
        tmp = out.with_suffix(".partial")
        if llama_cpp.llama_model_quantize(str(gguf).encode(), str(tmp).encode(), p) != 0:
            raise RuntimeError(f"llama.cpp could not re-quantize {gguf.name} to {kind}")
        tmp.replace(out)
    return out


def soft_tokens(backend: LLMBackend, n: int, seed: int) -> np.ndarray:
    """Stand-ins for projected media tokens with the scale of real token embeddings."""
    ids = np.random.default_rng(seed).integers(1000, 40000, size=n).tolist()
    return backend.embed_tokens(ids)


async def _prefill_once(backend: LLMBackend, segments: list) -> float:
    t = time.perf_counter()
    async for _ in backend.generate(segments, SamplingParams(max_tokens=1)):
        pass
    return time.perf_counter() - t


def bench_prefill(backend: LLMBackend, repeats: int) -> dict:
    audio, video = soft_tokens(backend, N_AUDIO, 1), soft_tokens(backend, N_VIDEO, 2)
    segs = [PROMPT_PARTS[0], audio, PROMPT_PARTS[1], video, PROMPT_PARTS[2]]
    n = backend.prompt_tokens(segs)
    times = [asyncio.run(_prefill_once(backend, segs)) for _ in range(repeats)]
    best = min(times)
    return {
        "prompt_tokens": n,
        "soft_tokens": N_AUDIO + N_VIDEO,
        "seconds": round(best, 4),
        "tokens_per_s": round(n / best, 1),
    }


def bench_decode(backend: LLMBackend, n_seqs: int, steps: int, warmup: int = 2) -> dict:
    stamps: list[tuple[float, int]] = []

    def on_step(size: int) -> None:
        stamps.append((time.perf_counter(), size))

    async def one(k: int) -> int:
        prompt = f"{10 * k + 1}, {10 * k + 2}, {10 * k + 3},"  # counting never hits EOS this soon
        n = 0
        async for _ in backend.generate([prompt], SamplingParams(max_tokens=warmup + steps + 2)):
            n += 1
        return n

    async def run() -> list[int]:
        return list(await asyncio.gather(*(one(k) for k in range(n_seqs))))

    backend.step_listeners.append(on_step)
    try:
        counts = asyncio.run(run())
    finally:
        backend.step_listeners.remove(on_step)
    full = [t for t, size in stamps if size == n_seqs]
    gaps = [b - a for a, b in zip(full, full[1:], strict=False)][warmup:]
    if not gaps:
        raise RuntimeError(f"no full-batch steps at n={n_seqs} (sequences ended early: {counts})")
    step_s = statistics.median(gaps)
    return {
        "concurrent": n_seqs,
        "steps": len(gaps),
        "step_ms": round(step_s * 1000, 2),
        "aggregate_tok_s": round(n_seqs / step_s, 1),
        "per_seq_tok_s": round(1 / step_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="llama_cpp:none,llama_cpp:requant-q4_0,transformers:none,transformers:int8")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--steps", type=int, default=16, help="timed decode steps per concurrency level")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="decode runs per level; the fastest is kept (shared cores)")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "xemo-llm-cache")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/llm.json (llm_builds.json)")
    ap.add_argument("--builds", default=None, help="compare llama.cpp builds, e.g. portable,avx2,native-noamx,native")
    args = ap.parse_args()
    if args.builds:
        compare_builds(args)
        return
    args.out = args.out or ROOT / "bench" / "results" / "llm.json"
    conc = [int(x) for x in args.concurrency.split(",")]
    gguf = smollm2_gguf_path()

    bw = copy_bandwidth()
    results = {
        "model": gguf.name,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "load_avg_at_start": os.getloadavg()[0],
            "decode_steps": args.steps,
            "repeats": args.repeats,
        },
        "copy_bandwidth_GBps": round(bw / 1e9, 2),
        "runs": [],
    }
    for cfg in args.configs.split(","):
        kind, quant = cfg.split(":")
        path, label = gguf, f"transformers {'fp32' if quant == 'none' else quant}"
        if kind == "llama_cpp":
            label = "llama_cpp Q4_1"
            if quant.startswith("requant-"):  # e.g. llama_cpp:requant-q4_0
                path, label = requantized(gguf, quant[8:], args.cache_dir), f"llama_cpp {quant[8:].upper()} (requant)"
            quant = "none"
        t = time.perf_counter()
        b = load_backend(
            path,
            kind,
            quantization=quant,
            n_ctx=1024,
            n_threads=args.threads,
            max_num_seqs=max(conc),
            cache_dir=args.cache_dir if kind == "transformers" else None,
        )
        load_s = time.perf_counter() - t
        try:
            nbytes = decode_bytes(b)
            bound = bw / nbytes  # decode steps/s if only weight reads limited it
            run = {
                "backend": label,
                "load_s": round(load_s, 2),
                "weight_bytes_per_step": nbytes,
                "bound_steps_per_s": round(bound, 1),
                "prefill": bench_prefill(b, repeats=args.repeats),
                "decode": [],
            }
            for n in conc:
                d = min((bench_decode(b, n, args.steps) for _ in range(args.repeats)), key=lambda r: r["step_ms"])
                d["fraction_of_bound"] = round((1000 / d["step_ms"]) / bound, 3)
                run["decode"].append(d)
                print(f"  {label}: n={n} {d['aggregate_tok_s']} tok/s", file=sys.stderr, flush=True)
            results["runs"].append(run)
        finally:
            b.close()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


def compare_builds(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    import llama_cpp_wheel

    from engines.llm.preflight import PreflightFailed, run_preflight

    out = args.out or ROOT / "bench" / "results" / "llm_builds.json"
    wheelhouse = llama_cpp_wheel.default_wheelhouse()
    rows = []
    for name in args.builds.split(","):
        wheel_dir = llama_cpp_wheel.build(name, wheelhouse, sys.executable)
        target = wheel_dir / "site"
        if not target.is_dir():
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                            str(target), "--find-links", str(wheel_dir), "llama-cpp-python"], check=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
        row = {"build": name, "cmake": json.loads((wheel_dir / "build.json").read_text())["cmake"]}
        try:
            pre = run_preflight(smollm2_gguf_path(), env=env)
        except PreflightFailed as e:
            rows.append({**row, "runs": False, "preflight": str(e)})
            print(f"  {name}: does not run here", file=sys.stderr, flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            res = Path(tmp) / "llm.json"
            subprocess.run([sys.executable, __file__, "--configs", "llama_cpp:none", "--concurrency",
                            args.concurrency, "--steps", str(args.steps), "--repeats", str(args.repeats),
                            "--threads", str(args.threads), "--out", str(res)],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            run = json.loads(res.read_text())["runs"][0]
        rows.append({**row, "runs": True, "cpu_variant": pre.variant, "system_info": pre.system_info,
                     "prefill_tok_s": run["prefill"]["tokens_per_s"],
                     "decode": {d["concurrent"]: d["aggregate_tok_s"] for d in run["decode"]}})
    result = {"model": smollm2_gguf_path().name,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                          "cpu": _cpu(), "load_avg_at_start": os.getloadavg()[0]},
              "builds": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(builds_table(result))


def _cpu() -> dict:
    from engines.llm.llama_cpp_lib import cpu_flags, cpu_model

    return {"model": cpu_model(), "kernel_flags": cpu_flags()}


def builds_table(r: dict) -> str:
    conc = sorted({int(k) for b in r["builds"] if b["runs"] for k in b["decode"]})
    lines = [f"{r['machine']['cpu']['model']}; flags: {' '.join(r['machine']['cpu']['kernel_flags'])}; "
             f"load average at start {r['machine']['load_avg_at_start']:.1f}",
             "| build | CPU variant | prefill tok/s | " + " | ".join(f"decode tok/s n={n}" for n in conc) + " |",
             "|---|---|---|" + "---|" * len(conc)]
    for b in r["builds"]:
        if not b["runs"]:
            lines.append(f"| {b['build']} | crashes here (preflight) | | " + "| " * len(conc))
            continue
        dec = " | ".join(str(b["decode"].get(str(n), b["decode"].get(n, ""))) for n in conc)
        lines.append(f"| {b['build']} | {b['cpu_variant'] or 'linked'} | {b['prefill_tok_s']} | {dec} |")
    return "\n".join(lines)


def table(r: dict) -> str:
    lines = [
        f"copy bandwidth {r['copy_bandwidth_GBps']} GB/s (numpy, 512 MB, read+write); "
        f"load average at start {r['machine']['load_avg_at_start']:.1f}",
        "| backend | MB read/step | bound steps/s | prefill 616 soft + text (s, tok/s) | n | agg tok/s "
        "| per-seq tok/s | of bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        p = run["prefill"]
        for i, d in enumerate(run["decode"]):
            head = (
                (
                    f"| {run['backend']} | {run['weight_bytes_per_step'] / 1e6:.0f} | {run['bound_steps_per_s']} "
                    f"| {p['seconds']} s, {p['tokens_per_s']} ({p['prompt_tokens']} tok) "
                )
                if i == 0
                else "| | | | "
            )
            lines.append(
                f"{head}| {d['concurrent']} | {d['aggregate_tok_s']} | {d['per_seq_tok_s']} "
                f"| {d['fraction_of_bound'] * 100:.0f}% |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

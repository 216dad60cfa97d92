"""llama.cpp attention kernels on the lite model where a request spends them: after the few-shot header.

A lite request prefills its cues (prompt chunks on `n_threads_batch`) after a cached ~800-token header, then the
explanation alternates sampled single-token steps with multi-token steps of grammar-forced words (on
`n_threads`). This bench builds one llama.cpp context per `flash_attn` mode on the lite settings' model, writes a
header of `--header` tokens, then times `--chunk-tokens` prompt tokens in `prefill_chunk` chunks and a
decode mix of `--single` one-token and `--forced` `--forced-len`-token steps, each request's KV removed again.
The modes alternate within every repeat, so the machine's background load hits them alike; medians of CPU and
wall seconds, and each mode's ratio to auto, go to bench/results/llm_attention.json.

    .venv/bin/python bench/llm_attention.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.lite.pipeline import LitePipeline  # noqa: E402
from engines.llm.llama_cpp_backend import LlamaCppBackend  # noqa: E402
from xemo.settings import Settings  # noqa: E402

MODES = ("auto", "on", "off")


def one_request(b: LlamaCppBackend, ids: list[int], args: argparse.Namespace, chunk: int) -> dict[str, float]:
    """Prefill and decode costs of one request after the header (slot 0 holds the header already)."""
    pos = args.header
    out: dict[str, float] = {}
    t, c = time.perf_counter(), time.process_time()
    end = pos + args.chunk_tokens
    while pos < end:
        n = min(chunk - pos % chunk, end - pos)
        b._run_batch(0, pos, ids[pos:pos + n], None, "last")
        pos += n
    out["prefill_wall_s"], out["prefill_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    batch = b.n_threads_batch
    b.n_threads_batch = b.n_threads  # one sequence's steps run on n_threads, as in the engine's _decode
    try:
        for n in [1] * args.single + [args.forced_len] * args.forced:
            b._run_batch(0, pos, ids[pos:pos + n], None, "last")
            pos += n
    finally:
        b.n_threads_batch = batch
    out["decode_wall_s"], out["decode_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    b.lib.llama_memory_seq_rm(b.mem, 0, args.header, -1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--header", type=int, default=768, help="cached prompt tokens before the request's own")
    ap.add_argument("--chunk-tokens", type=int, default=64, help="the request's prompt tokens (cues, transcript)")
    ap.add_argument("--single", type=int, default=18, help="sampled one-token explanation steps")
    ap.add_argument("--forced", type=int, default=8, help="steps of grammar-forced tokens")
    ap.add_argument("--forced-len", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llm_attention.json")
    args = ap.parse_args()

    settings = Settings()
    lite = settings.lite
    pipeline = LitePipeline(settings)
    backends = {}
    for mode in MODES:
        settings.lite.llm_flash_attn = mode
        llm = pipeline.load_llm()
        assert isinstance(llm, LlamaCppBackend), "this bench measures the llama_cpp backend"
        backends[mode] = llm
    text = "The person smiles, and the voice rises; in the text, the words express joy. " * 80
    need = args.header + args.chunk_tokens + args.single + args.forced * args.forced_len
    ids = backends["auto"].tokenize(text)[:need]
    if len(ids) < need:
        raise SystemExit("the filler text is too short for these sizes")
    for b in backends.values():  # the header, once per context, in the engine's biggest batches
        for k in range(0, args.header, 512):
            b._run_batch(0, k, ids[k:min(k + 512, args.header)], None, "none")
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for r in range(args.repeats + 1):  # the first round warms each context and is not counted
        for mode, b in backends.items():
            row = one_request(b, ids, args, lite.prefill_chunk)
            if r:
                runs[mode].append(row)
    med = {m: {k: round(statistics.median(x[k] for x in rows), 4) for k in rows[0]} for m, rows in runs.items()}
    ratio = {m: {k: round(v / med["auto"][k], 3) for k, v in med[m].items()} for m in MODES if m != "auto"}
    result = {
        "what": "llama.cpp attention kernels after the few-shot header, lite model and threads, medians",
        "model": backends["auto"].name,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"n_threads": lite.n_threads, "n_threads_batch": lite.n_threads_batch,
                     "prefill_chunk": lite.prefill_chunk, **{k: v for k, v in vars(args).items() if k != "out"}},
        "median": med,
        "ratio_to_auto": ratio,
    }
    for b in backends.values():
        b.close()
    print(f"{'mode':5} {'prefill cpu':>12} {'prefill wall':>13} {'decode cpu':>11} {'decode wall':>12}")
    for m in MODES:
        x = med[m]
        print(f"{m:5} {x['prefill_cpu_s']:12.3f} {x['prefill_wall_s']:13.3f} {x['decode_cpu_s']:11.3f} "
              f"{x['decode_wall_s']:12.3f}")
    for m, x in ratio.items():
        print(f"{m} / auto: " + ", ".join(f"{k} {v}" for k, v in x.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

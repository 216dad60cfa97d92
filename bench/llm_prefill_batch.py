"""Prefill cost per prompt token by batch size on the lite model, after the few-shot header.

A lite request's label step prefills its own cue lines after a cached ~800-token header, in batches of
`prefill_chunk` tokens. This bench loads the lite settings' model (threads, attention kernel, re-quantization as
configured), writes a header of `--header` tokens, then times `--chunk-tokens` prompt tokens cut into batches of
each size in `--chunks` (bench/llm_attention.py's `one_request`, no decode steps; each batch computes its last
token's logits, about a millisecond per batch; a 1-token batch runs on `n_threads`, as in the engine). The sizes
alternate within every repeat, so background load hits them alike; median wall and CPU milliseconds per token go
to bench/results/llm_prefill_batch.json.

    .venv/bin/python bench/llm_prefill_batch.py [--chunks 1,4,16,64,256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from llm_attention import one_request  # noqa: E402

from engines.lite.pipeline import LitePipeline  # noqa: E402
from engines.llm.llama_cpp_backend import LlamaCppBackend  # noqa: E402
from xemo.settings import Settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", default="1,4,16,64,256", help="prefill batch sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--header", type=int, default=768, help="cached prompt tokens before the request's own")
    ap.add_argument("--chunk-tokens", type=int, default=256, help="the request's prompt tokens, per size")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llm_prefill_batch.json")
    args = ap.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    timed = argparse.Namespace(header=args.header, chunk_tokens=args.chunk_tokens, single=0, forced=0, forced_len=1)

    settings = Settings()
    b = LitePipeline(settings).load_llm()
    assert isinstance(b, LlamaCppBackend), "this bench measures the llama_cpp backend"
    text = "The person smiles, and the voice rises; in the text, the words express joy. " * 80
    ids = b.tokenize(text)[: args.header + args.chunk_tokens]
    if len(ids) < args.header + args.chunk_tokens:
        raise SystemExit("the filler text is too short for these sizes")
    for k in range(0, args.header, 512):
        b._run_batch(0, k, ids[k:min(k + 512, args.header)], None, "none")
    runs: dict[int, list[dict[str, float]]] = {c: [] for c in chunks}
    for r in range(args.repeats + 1):  # the first round warms up and is not counted
        for c in chunks:
            row = one_request(b, ids, timed, c)
            if r:
                runs[c].append(row)
    per_token = {
        c: {"wall_ms": round(1000 * statistics.median(x["prefill_wall_s"] for x in rows) / args.chunk_tokens, 2),
            "cpu_ms": round(1000 * statistics.median(x["prefill_cpu_s"] for x in rows) / args.chunk_tokens, 2)}
        for c, rows in runs.items()
    }
    b.close()
    lite = settings.lite
    result = {
        "what": "prefill milliseconds per prompt token by batch size, after the few-shot header, lite model, medians",
        "model": b.name,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"n_threads_batch": lite.n_threads_batch, "flash_attn": lite.llm_flash_attn,
                     "requantize": lite.llm_requantize, **{k: v for k, v in vars(args).items() if k != "out"}},
        "per_token_by_batch": per_token,
    }
    print(f"{'batch':>5} {'wall ms/token':>14} {'cpu ms/token':>13}")
    for c, x in per_token.items():
        print(f"{c:5} {x['wall_ms']:14.2f} {x['cpu_ms']:13.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

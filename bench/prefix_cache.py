"""Prefix caching in the llama.cpp backend: time to label and time to first token of the lite prompt pattern.

Each lite request sends (1) `score_choices(label_prompt, labels)` and then (2) `generate(label_prompt + label +
"\\nExplanation: ...")`. Label prompts with the same present modalities share their few-shot header and differ
in their cues. This replays that pattern on SmolLM2-135M (the lite LLM) for requests with distinct cues, on two
backends loaded side by side, one with `prefix_cache_slots=0` and one with 2, alternating request by request so
both see the same machine load; for each `--prefill-chunk` (prefixes are reused up to a prefill-batch boundary,
so a smaller chunk reuses more of a ~300-token prompt). The first request of each modality set warms the cache
and is reported apart. Also checked: the cached and uncached label scores and greedy tokens are identical.

    .venv/bin/python bench/prefix_cache.py [--requests 8] [--prefill-chunk 32 256]   # bench/results/prefix_cache.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.lite import prompt  # noqa: E402
from engines.llm import LLMBackend, SamplingParams, load_backend, smollm2_gguf_path  # noqa: E402
from engines.types import Cue  # noqa: E402
from xemo.settings import Settings  # noqa: E402

FACES = [
    "the corners of the mouth turn up",
    "brows drawn together",
    "looks down; eyes half closed",
    "the eyes widen; the mouth opens",
    "a neutral face; steady gaze",
    "the nose wrinkles; upper lip raised",
    "the lips press together",
    "a broad smile; the cheeks rise",
    "the brows rise and pull together",
    "the jaw clenches; a hard stare",
]
VOICES = [
    "the pitch is high and varied",
    "the voice is loud",
    "the voice is soft and low-pitched",
    "speaks quickly",
    "long pauses",
    "the voice trembles",
    "a flat tone",
    "the tone is intense",
    "laughs while speaking",
    "a sigh before speaking",
]


def requests(n: int, labels: list[str]) -> list[prompt.PromptParts]:
    out = []
    for i in range(n):
        cues = [Cue("visual", FACES[i % len(FACES)], strength=0.9), Cue("auditory", VOICES[i % len(VOICES)], 0.8)]
        if i % 4 == 3:  # every fourth request also has words: another modality set, another prompt header
            cues.append(Cue("verbal", f'says: "request number {i}"; neutral wording', strength=0.5))
        out.append(prompt.build(cues, labels))
    return out


async def one(b: LLMBackend, parts: prompt.PromptParts, labels: list[str], max_tokens: int) -> dict:
    t0 = time.perf_counter()
    scores = await b.score_choices([parts.label_prompt], [" " + lb for lb in labels])
    label = max(labels, key=lambda lb: scores[" " + lb])
    t_label = time.perf_counter()
    tokens, t_first = [], None
    params = SamplingParams(max_tokens=max_tokens)
    gen = b.generate([parts.label_prompt + " " + label + parts.explanation_prefix], params)
    async for tok in gen:
        if t_first is None:
            t_first = time.perf_counter()
        tokens.append(tok.token_id)
    return {
        "time_to_label_s": t_label - t0,
        "ttft_after_label_s": t_first - t_label,
        "ttft_s": t_first - t0,
        "scores": scores,
        "tokens": tokens,
    }


def run(chunk: int, n: int, max_tokens: int, settings: Settings) -> dict:
    lite, labels = settings.lite, list(settings.lite.labels)
    kw = dict(
        n_ctx=lite.n_ctx, n_threads=lite.n_threads, max_num_seqs=settings.server.max_num_seqs, prefill_chunk=chunk
    )
    cold = load_backend(smollm2_gguf_path(), "llama_cpp", prefix_cache_slots=0, **kw)
    warm = load_backend(smollm2_gguf_path(), "llama_cpp", prefix_cache_slots=lite.prefix_cache_slots, **kw)
    rows: dict[str, list[dict]] = {"off": [], "on": []}
    seen: set[tuple] = set()
    max_diff, same_tokens = 0.0, True
    try:
        for i, parts in enumerate(requests(n, labels)):
            first = parts.modalities not in seen
            seen.add(parts.modalities)
            order = [("off", cold), ("on", warm)] if i % 2 == 0 else [("on", warm), ("off", cold)]
            res = {name: asyncio.run(one(b, parts, labels, max_tokens)) for name, b in order}
            on, off = res["on"]["scores"], res["off"]["scores"]
            max_diff = max(max_diff, *(abs(on[k] - off[k]) for k in on))
            same_tokens &= res["on"]["tokens"] == res["off"]["tokens"]
            for name in rows:
                times = {k: round(v, 4) for k, v in res[name].items() if k.endswith("_s")}
                n_tok = len(cold.tokenize(parts.label_prompt))
                rows[name].append({"first_of_its_modalities": first, "prompt_tokens": n_tok, **times})
        stats = warm.stats()
    finally:
        cold.close()
        warm.close()

    def med(name: str, key: str) -> float:
        return round(statistics.median(r[key] for r in rows[name] if not r["first_of_its_modalities"]), 4)

    keys = ("time_to_label_s", "ttft_after_label_s", "ttft_s")
    summary = {name: {k: med(name, k) for k in keys} for name in rows}
    summary["speedup_off_over_on"] = {k: round(summary["off"][k] / summary["on"][k], 2) for k in keys}
    return {
        "prefill_chunk": chunk,
        "median_over_warm_requests": summary,
        "max_abs_logprob_diff": max_diff,
        "greedy_tokens_identical": same_tokens,
        "cache_stats": stats,
        "requests": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--prefill-chunk", type=int, nargs="+", help="default: the lite setting, then 256")
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prefix_cache.json")
    args = ap.parse_args()
    settings = Settings()
    args.prefill_chunk = args.prefill_chunk or [settings.lite.prefill_chunk, 256]
    load0 = os.getloadavg()[0]
    results = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(load0, 2),
        "model": smollm2_gguf_path().name,
        "n_threads": settings.lite.n_threads,
        "prefix_cache_slots": settings.lite.prefix_cache_slots,
        "runs": [run(c, args.requests, args.max_tokens, settings) for c in args.prefill_chunk],
    }
    results["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    for r in results["runs"]:
        s = r["median_over_warm_requests"]
        print(
            f"prefill_chunk={r['prefill_chunk']}: "
            + "; ".join(
                f"{k}: off {s['off'][k]:.3f}s on {s['on'][k]:.3f}s x{s['speedup_off_over_on'][k]}" for k in s["off"]
            )
            + f"; max|dlogprob|={r['max_abs_logprob_diff']:.2e} tokens identical={r['greedy_tokens_identical']}"
        )
    print(f"load avg {results['load_avg_1m_at_start']} -> {results['load_avg_1m_at_end']}; wrote {args.out}")


if __name__ == "__main__":
    main()

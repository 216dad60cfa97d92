"""Torch eager vs ONNX Runtime (CPU) for the exported XEmoGPT front ends at ViT-B/16 / HuBERT-Base size.

Random weights, configs built in code (no download): a CLIP ViT-B/16 vision tower (768 wide, 12 layers, 224 px)
+ VECB (2 CLIP layers) + projector to 2560 (Qwen3-4B width), 16 frames per clip; a HuBERT-Base-sized model
(768 wide, 12 layers, stable-layer-norm like HuBERT-Large) + AECB + projector, on mixed-length audio padded into
one batch. Both runtimes get the same thread count. Prints a table and writes bench/results/export.json.

    .venv/bin/python bench/export.py [--threads 2] [--reps 1] [--audio-s 4] [--batches 1,8]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engines.runtime.onnx import OrtGraph  # noqa: E402
from export.onnx_export import audio_spec, export_onnx, video_spec  # noqa: E402
from export.parity import compare  # noqa: E402

D_LLM = 2560


def video_module() -> torch.nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from engines.xemogpt.video import VideoFrontEnd

    cfg = CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
        attn_implementation="sdpa",
    )
    return VideoFrontEnd(CLIPVisionModel(cfg), D_LLM).eval()


def audio_module() -> torch.nn.Module:
    from transformers import HubertConfig, HubertModel

    from engines.xemogpt.audio import AudioFrontEnd

    cfg = HubertConfig(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        attn_implementation="sdpa",
    )
    return AudioFrontEnd(HubertModel(cfg), D_LLM).eval()


def inputs(name: str, batch: int, audio_s: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    if name == "video":
        return (rng.standard_normal((batch, 16, 3, 224, 224), dtype=np.float32),)
    full = int(audio_s * 16000)
    lens = [full] + [int(full * f) for f in np.linspace(0.4, 0.95, batch - 1)] if batch > 1 else [full]
    x = np.zeros((batch, full), np.float32)
    mask = np.zeros((batch, full), np.int64)
    for i, n in enumerate(lens):
        x[i, :n] = rng.standard_normal(n)
        mask[i, :n] = 1
    return x, mask


def timed(fn, args: tuple, reps: int, warmup: bool) -> tuple[float, float, list]:  # noqa: ANN001
    """(median wall s, median process CPU s, output). CPU time is the steadier number on a shared machine."""
    out = fn(*args) if warmup else None  # ORT allocates its arena, torch picks kernels
    walls, cpus = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--audio-s", type=float, default=4.0)
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    batches = [int(b) for b in args.batches.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build, spec in (
            ("video", video_module, video_spec(16, 224, D_LLM, max(batches))),
            ("audio", audio_module, audio_spec(D_LLM, max(batches), 12 * 16000)),
        ):
            module = build()
            params = sum(p.numel() for p in module.parameters())
            t0 = time.perf_counter()
            graph = export_onnx(module, spec, Path(tmp), 18)
            export_s = time.perf_counter() - t0
            ort = OrtGraph(Path(tmp) / graph.file, ["CPUExecutionProvider"], args.threads, 1)

            def eager(*xs: np.ndarray, module: torch.nn.Module = module) -> list[np.ndarray]:
                with torch.inference_mode():
                    out = module(*(torch.from_numpy(x) for x in xs))
                return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

            for b in batches:
                xs = inputs(name, b, args.audio_s, rng)
                # batch 1 warms both runtimes up; the large batch is timed cold-shape (its cost dwarfs that)
                warm = b == batches[0]
                t_torch, c_torch, ref = timed(eager, xs, args.reps, warm)
                t_ort, c_ort, got = timed(ort, xs, args.reps, warm)
                max_abs, omc, _ = compare(ref, got)
                row = {
                    "graph": name,
                    "batch": b,
                    "params_m": round(params / 1e6, 1),
                    "input": "x".join(map(str, xs[0].shape)),
                    "torch_ms": round(t_torch * 1e3, 1),
                    "ort_ms": round(t_ort * 1e3, 1),
                    "speedup": round(t_torch / t_ort, 3),
                    "torch_cpu_s": round(c_torch, 2),
                    "ort_cpu_s": round(c_ort, 2),
                    "cpu_ratio": round(c_torch / c_ort, 3),
                    "torch_clips_per_s": round(b / t_torch, 3),
                    "ort_clips_per_s": round(b / t_ort, 3),
                    "max_abs": max_abs,
                    "one_minus_cos": omc,
                    "export_s": round(export_s, 1),
                }
                results.append(row)
                print(
                    f"{name:<6} b={b:<2} {row['input']:<18} torch {row['torch_ms']:>9.1f} ms  "
                    f"ort {row['ort_ms']:>9.1f} ms  x{row['speedup']:.2f}  "
                    f"({row['torch_clips_per_s']:.2f} vs {row['ort_clips_per_s']:.2f} clips/s)  "
                    f"cpu x{row['cpu_ratio']:.2f}  max|d| {max_abs:.1e}",
                    flush=True,
                )
            del module, ort
    out = {
        "machine": {
            "cpu_threads": args.threads,
            "platform": platform.platform(),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
        },
        "settings": {"reps": args.reps, "audio_s": args.audio_s, "frames": 16, "d_llm": D_LLM},
        "results": results,
        "ratios": {f"{r['graph']}_b{r['batch']}": r["speedup"] for r in results},
        "cpu_time_ratios": {f"{r['graph']}_b{r['batch']}": r["cpu_ratio"] for r in results},
        "load_average": list(__import__("os").getloadavg()),
    }
    path = ROOT / "bench" / "results" / "export.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

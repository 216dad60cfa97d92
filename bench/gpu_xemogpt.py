"""XEmoGPT at its published size: the released inference path against ours, on the same generated clips.

Builds CLIP ViT-L/14 (vision tower), HuBERT-Large and Qwen3-4B from their configurations (the published
dimensions are written below; random weights, nothing downloaded) around the serving code of engines/xemogpt
(VideoFrontEnd / AudioFrontEnd, the released prompt, XEmoGPTPipeline.stream) and times two paths:

- released: float32 everywhere, one clip at a time, 5-beam sampling (temperature 0.3, top-p 0.9) up to
  --max-new-tokens (756 as published) with transformers' generate; the released model names the emotion at the
  end of its paragraph, so its time to label is its time to the whole answer;
- ours: the serving pipeline: bfloat16 front ends (or ONNX Runtime, with the CUDA provider where installed),
  a bfloat16 LLM on CUDA or an int8 one on CPU, our label scoring, greedy decoding, stages through the server's
  dynamic batcher and the LLM's continuous batching, first one request alone, then --concurrency at once.

Each path runs in its own process, so its peak memory is its own (torch.cuda.max_memory_allocated on CUDA,
peak RSS on CPU). --time-budget-s bounds the whole run: work that does not fit is skipped or stopped, and the
JSON says what. Writes bench/results/gpu_xemogpt_<device>_<size>.json (or --out).

    # the CI-sized run (seconds; tests/bench/test_gpu_xemogpt.py runs it):
    .venv/bin/python bench/gpu_xemogpt.py --size tiny --device cpu --max-new-tokens 6 --clips 2 \
        --clip-seconds 3 --concurrency 2
    # full size on a 2-core CPU: int8 LLM, one clip, a few new tokens (the released float32 LLM is skipped when
    # its weights do not fit in --max-memory-gb; its front ends still run):
    nice -n 5 .venv/bin/python bench/gpu_xemogpt.py --size full --device cpu --clips 1 --concurrency 2 \
        --requests 2 --max-new-tokens 16 --time-budget-s 3000

On a CUDA machine (the GPU profile, under 10 minutes). Its image has torch, transformers, onnx and a CPU-only
onnxruntime but neither pydantic nor ffmpeg / espeak-ng, so the clips and six small wheels are made here and
carried there (both folders ignored by git through .git/info/exclude):

    printf '/.whl/\n/.gpu_clips/\n' >> .git/info/exclude
    .venv/bin/python bench/gpu_xemogpt.py --prepare-clips --clips 4 --clip-cache .gpu_clips   # ~32 MB
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 \
        pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 typing-inspection==0.4.5 \
        python-dotenv==1.2.4 typing-extensions==4.16.0
    # then, there (carry .whl and .gpu_clips; timeout 600 s):
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 \
        && python3 bench/gpu_xemogpt.py --size full --device cuda --clips 4 --clip-cache .gpu_clips \
            --time-budget-s 480 --out $OUT/gpu_xemogpt_cuda_full.json

A worker still busy 60 s (CUDA) or max(120 s, budget / 4) (CPU) past its budget is killed and reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402

NUM_FRAMES = 16
SAMPLE_RATE = 16000

# The published configurations: openai/clip-vit-large-patch14 (vision tower), TencentGameMate/chinese-hubert-large
# (the HuBERT-Large layout) and Qwen/Qwen3-4B. Only the shapes matter here: the weights are random.
FULL = {
    "clip_vision": dict(hidden_size=1024, intermediate_size=4096, projection_dim=768, num_hidden_layers=24,
                        num_attention_heads=16, image_size=224, patch_size=14, hidden_act="quick_gelu",
                        layer_norm_eps=1e-5),
    "hubert": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                   hidden_act="gelu", conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2),
                   conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_bias=True, feat_extract_norm="layer",
                   do_stable_layer_norm=True, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
                   layer_norm_eps=1e-5, vocab_size=32),
    "qwen3": dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                  rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=True, hidden_act="silu"),
}
RELEASED_DECODING = {"num_beams": 5, "do_sample": True, "temperature": 0.3, "top_p": 0.9}
SENTENCES = [
    "I can't believe it, this is wonderful news, I am so glad you came.",
    "I cannot believe you did this again, this is completely unacceptable.",
    "Please leave me alone, I really do not want to talk about it now.",
    "Well, I suppose we could try again tomorrow if you think it helps.",
    "Oh no, the door is open and the lights are off, someone was here.",
    "Thank you so much for the flowers, they are absolutely beautiful.",
    "I waited for two hours and nobody called, not even once.",
    "We won the match, I told you we would, I told you!",
]
LABELS = ["neutral", "happy", "sad", "angry", "worried", "surprise"]


def sizes(size: str) -> dict[str, dict[str, Any]]:
    if size == "full":
        return FULL
    import tiny_models

    return {"clip_vision": tiny_models.CLIP_VISION, "hubert": tiny_models.HUBERT, "qwen3": tiny_models.QWEN3}


# ---- clips ------------------------------------------------------------------------------------------------------


def make_clips(cache: Path, n: int, seconds: float) -> list[dict[str, Any]]:
    """n generated clips (the animated face photograph of tests/media.py, espeak-ng speech padded to `seconds`),
    ingested by our own ingest and kept as .npz in `cache`, so a machine without ffmpeg or espeak-ng (a GPU box)
    runs on exactly the same frames and audio. Returns their metadata."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = cache / f"clip{i}_{seconds:g}s.npz"
        if not path.is_file():
            _make_clip(path, i, seconds)
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
        out.append({"file": path.name, **meta})
    return out


def _make_clip(path: Path, i: int, seconds: float) -> None:
    import media

    from engines.ingest import ingest
    from xemo.settings import IngestSettings

    text = SENTENCES[i % len(SENTENCES)]
    with tempfile.TemporaryDirectory() as d:
        dd = Path(d)
        speech = media.speech(dd / "speech.wav", text, pitch=35 + 7 * i % 40, speed=150 + 9 * i % 60)
        padded = dd / "speech_padded.wav"
        media.run(["sox", str(speech), str(padded), "pad", "0", str(seconds), "trim", "0", str(seconds)])
        clip_path = media.face_clip(dd / "clip.mp4", media.face_image(dd / "face.png"), seconds=seconds,
                                    audio=padded)
        t = time.perf_counter()
        clip = ingest(clip_path, None, IngestSettings(timeline_fps=0, video_decoder="pyav", decode_workers=1))
        ingest_s = time.perf_counter() - t
    meta = {"transcript": text, "seconds": seconds, "duration_s": clip.duration_s, "container": clip.container,
            "video": dataclasses.asdict(clip.video) if clip.video else None,
            "audio_info": dataclasses.asdict(clip.audio_info) if clip.audio_info else None,
            "frame_times": clip.frame_times, "frames_shape": list(clip.frames.shape), "ingest_s": round(ingest_s, 3)}
    np.savez_compressed(path, frames=clip.frames, audio=clip.audio, meta=np.array(json.dumps(meta)))


def load_clips(cache: Path, files: list[str]) -> list[tuple[Any, str]]:
    """(engines.types.Clip, transcript) for each cached clip."""
    from engines.types import AudioInfo, Clip, VideoInfo

    out = []
    for name in files:
        with np.load(cache / name, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            clip = Clip(container=meta["container"], duration_s=meta["duration_s"],
                        video=VideoInfo(**meta["video"]) if meta["video"] else None,
                        audio_info=AudioInfo(**meta["audio_info"]) if meta["audio_info"] else None,
                        frames=z["frames"], frame_times=meta["frame_times"], audio=z["audio"])
        out.append((clip, meta["transcript"]))
    return out


# ---- the machine ------------------------------------------------------------------------------------------------


def device_info(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
                            "python": platform.python_version(), "cpu": cpu_model(), "cores": os.cpu_count(),
                            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(card=torch.cuda.get_device_name(0), card_memory_gb=round(p.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, driver=nvidia_driver())
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_driver() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def peak_memory(device: str) -> dict[str, Any]:
    import torch

    if device == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated()),
                "peak_memory_kind": "torch.cuda.max_memory_allocated"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_memory_kind": "peak RSS of the process (ru_maxrss)"}


def qwen3_params(q: dict[str, Any]) -> int:
    """Parameters of a Qwen3 config (tied embeddings counted once; the tiny one's vocabulary is its tokenizer's)."""
    h, layers, hd = q["hidden_size"], q["num_hidden_layers"], q["head_dim"]
    attn = h * hd * (2 * q["num_attention_heads"] + 2 * q["num_key_value_heads"]) + 2 * hd
    per_layer = attn + 3 * h * q["intermediate_size"] + 2 * h
    embed = q.get("vocab_size", 512) * h * (1 if q["tie_word_embeddings"] else 2)
    return embed + layers * per_layer + h


# ---- building the models ---------------------------------------------------------------------------------------


def build_tokenizer(qwen3: dict[str, Any]) -> Any:
    """The byte-level BPE of tests/tiny_models.py stands in for Qwen's tokenizer (no download): ids above its
    ~400 decode to nothing, and its prompt text is longer than Qwen's would be (the JSON reports the counts)."""
    import tiny_models

    with tempfile.TemporaryDirectory() as d:
        return tiny_models.byte_bpe_tokenizer(Path(d))


def build_llm(size: str, tok: Any, device: str, dtype: Any) -> Any:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    q = dict(sizes(size)["qwen3"])
    if size == "tiny":
        q["vocab_size"] = len(tok)
    cfg = Qwen3Config(**q, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM._from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def build_front_end_modules(size: str, llm_hidden: int, device: str, dtype: Any) -> tuple[Any, Any]:
    """The serving VideoFrontEnd / AudioFrontEnd around config-built CLIP and HuBERT (as engines.xemogpt.model
    assembles them from loaded encoders)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, HubertConfig, HubertModel

    from engines.xemogpt.audio import AudioFrontEnd
    from engines.xemogpt.video import VideoFrontEnd

    s = sizes(size)
    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(**s["clip_vision"], attn_implementation="sdpa"))
    hubert = HubertModel(HubertConfig(**s["hubert"], attn_implementation="sdpa"))
    video = VideoFrontEnd(clip, llm_hidden, num_frames=NUM_FRAMES)
    audio = AudioFrontEnd(hubert, llm_hidden)
    return video.to(device, dtype).eval(), audio.to(device, dtype).eval()


def processors() -> tuple[Any, Any]:
    import tiny_models

    return tiny_models.clip_image_processor(), tiny_models.hubert_feature_extractor()


def settings_for(args: argparse.Namespace, dtype: str, max_num_seqs: int) -> Any:
    from xemo.settings import Settings

    return Settings(profile="xemogpt", asr={"enabled": False},
                    xemogpt={"device": args.device, "dtype": dtype, "max_context": 2048},
                    generation={"max_tokens": args.max_new_tokens, "temperature": 0.0},
                    server={"max_num_seqs": max_num_seqs})


def make_pipeline(args: argparse.Namespace, front_ends: Any, llm: Any, dtype: str, max_num_seqs: int) -> Any:
    from engines.xemogpt.pipeline import XEmoGPTPipeline

    pipe = XEmoGPTPipeline(settings_for(args, dtype, max_num_seqs))
    image_processor, feature_extractor = processors()
    pipe.assemble(front_ends, llm, image_processor, feature_extractor, llm.tokenizer.pad_token_id)
    return pipe


def n_params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def p50(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 4) if xs else None


# ---- (a) the released path -------------------------------------------------------------------------------------


def run_released(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    from engines.llm.transformers_backend import TransformersBackend
    from engines.runtime.factory import torch_front_ends
    from engines.xemogpt import prompt

    res: dict[str, Any] = {"path": "released", "precision": "float32 (front ends and LLM)", "batch": 1,
                           "decoding": {**RELEASED_DECODING, "max_new_tokens": args.max_new_tokens},
                           "front_ends": "torch float32", "requests": []}
    q = sizes(args.size)["qwen3"]
    fp32_llm = qwen3_params(q) * 4
    t = time.perf_counter()
    if fp32_llm > args.max_memory_gb * 2**30:
        # the front ends alone still run, so their float32 time is measured on this machine too
        res["llm_skipped"] = (f"the float32 LLM alone is {fp32_llm / 2**30:.1f} GiB, over --max-memory-gb "
                              f"{args.max_memory_gb:g} on this machine: only the front ends ran")
        video, audio = build_front_end_modules(args.size, q["hidden_size"], args.device, torch.float32)
        pipe = front_ends_only(args, torch_front_ends(video, audio), q["hidden_size"])
        llm = model = None
    else:
        tok = build_tokenizer(q)
        model = build_llm(args.size, tok, args.device, torch.float32)
        llm = TransformersBackend.from_model(model, tok, f"qwen3-{args.size}-random", device=args.device,
                                             n_ctx=2048, n_threads=os.cpu_count() or 2, max_num_seqs=1)
        video, audio = build_front_end_modules(args.size, llm.hidden_size, args.device, torch.float32)
        pipe = make_pipeline(args, torch_front_ends(video, audio), llm, "float32", 1)
        res["llm"] = {"name": llm.name, "weights_bytes": llm.model_bytes, "params": n_params(model)}
    sync(args.device)
    res["build_s"] = round(time.perf_counter() - t, 2)
    res["front_end_params"] = {"video": n_params(video), "audio": n_params(audio)}
    clips = load_clips(Path(args.clip_cache), args.clip_files)
    warm(args, pipe)

    def embeds(segments: list[Any]) -> torch.Tensor:
        parts = [s if isinstance(s, np.ndarray) else llm.embed_tokens(llm.tokenize(s)) for s in segments]
        return torch.from_numpy(np.concatenate(parts)).to(args.device, torch.float32)[None]

    for i, (clip, transcript) in enumerate(clips):
        if time.time() > deadline:
            res.setdefault("skipped", []).append(f"clip {i}: out of time budget")
            continue
        t0 = time.perf_counter()
        v = pipe.stages["vision_encode"].run_batch([clip.frames])[0]
        a = pipe.stages["audio_encode"].run_batch([clip.audio])[0]
        sync(args.device)
        t_fe = time.perf_counter()
        if llm is None:
            res["requests"].append({"clip": i, "front_ends_s": round(t_fe - t0, 4), "audio_tokens": len(a),
                                    "video_tokens": len(v)})
            continue
        p = prompt.build(a, v, transcript, LABELS, lambda s: len(llm.tokenize(s)),
                         2048 - args.max_new_tokens)
        x = embeds([pipe.pad_embedding, *p.segments])
        clock = _Clock(args.device)
        stop = _Deadline(deadline)
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
        with torch.inference_mode():
            out = model.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                 logits_processor=LogitsProcessorList([clock]),
                                 stopping_criteria=StoppingCriteriaList([stop]), **RELEASED_DECODING)
        sync(args.device)
        t1 = time.perf_counter()
        new = int(out.shape[1]) if out.shape[1] <= args.max_new_tokens else int(out.shape[1] - x.shape[1])
        decode_s = (clock.times[-1] - clock.times[0]) if len(clock.times) > 1 else 0.0
        res["requests"].append({
            "clip": i, **p.usage, "front_ends_s": round(t_fe - t0, 4), "prefill_s": round(clock.times[0] - t_fe, 4)
            if clock.times else None, "decode_s": round(decode_s, 4), "generated_tokens": new,
            "time_to_label_s": round(t1 - t0, 4), "total_s": round(t1 - t0, 4), "stopped_by_budget": stop.hit,
            "decode_tokens_per_s": round((len(clock.times) - 1) / decode_s, 2) if decode_s > 0 else None,
        })
    pipe.close()
    rows = res["requests"]
    res["budget_cut"] = bool(res.get("skipped")) or any(r.get("stopped_by_budget") for r in rows)
    if llm is None:
        res["status"] = "partial" if rows else "skipped"
        res["reason"] = res["llm_skipped"]
        res["summary_front_ends"] = {"front_ends_s_p50": p50([r["front_ends_s"] for r in rows])}
        return res
    if rows:
        busy = sum(r["total_s"] for r in rows)
        res["summary"] = {
            "requests": len(rows), "time_to_label_s_p50": p50([r["time_to_label_s"] for r in rows]),
            "generated_tokens": sum(r["generated_tokens"] for r in rows),
            "tokens_per_s": round(sum(r["generated_tokens"] for r in rows) / busy, 2),
            "decode_tokens_per_s_p50": p50([r["decode_tokens_per_s"] for r in rows if r["decode_tokens_per_s"]]),
            "beam_tokens_per_s": round(RELEASED_DECODING["num_beams"] * sum(r["generated_tokens"] for r in rows)
                                       / busy, 2),
            "requests_per_s": round(len(rows) / busy, 4),
        }
    res["status"] = "partial" if res["budget_cut"] and rows else ("ran" if rows else "skipped")
    if not rows:
        res["reason"] = "out of time budget before the first clip"
    return res


class _Clock:
    """A logits processor that only notes when each step's logits arrive (the first: the prompt is in)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if not self.times:
            sync(self.device)
        self.times.append(time.perf_counter())
        return scores


class _Deadline:
    """A stopping criterion: stop every beam once the time budget is spent."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.hit = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.hit = self.hit or time.time() > self.deadline
        return torch.full((input_ids.shape[0],), self.hit, dtype=torch.bool, device=input_ids.device)


def front_ends_only(args: argparse.Namespace, front_ends: Any, llm_hidden: int) -> Any:
    """A pipeline holding just the two encode stages (the released path when its LLM does not fit): the
    attributes those stages read, set as assemble() sets them."""
    from engines.xemogpt.pipeline import AudioEncodeStage, VideoEncodeStage, XEmoGPTPipeline

    pipe = XEmoGPTPipeline(settings_for(args, "float32", 1))
    pipe.image_processor, pipe.feature_extractor = processors()
    pipe.front_ends, pipe.video_fn, pipe.audio_fn = front_ends, front_ends.video, front_ends.audio
    pipe.llm_hidden = llm_hidden
    pipe.stages = {"vision_encode": VideoEncodeStage(pipe, 1), "audio_encode": AudioEncodeStage(pipe, 1)}
    return pipe


def warm(args: argparse.Namespace, pipe: Any) -> None:
    """Stage warm-ups (zero frames, 1 s of silence) and a short text-only generation: lazy initialisation and
    first-call kernel choices stay out of the timings."""
    from engines.llm.base import SamplingParams

    pipe.warmup()
    if pipe.llm is None:
        return

    async def gen() -> None:
        async for _ in pipe.llm.generate(["###Human: hello ###Assistant:"], SamplingParams(max_tokens=2)):
            pass

    asyncio.run(gen())
    sync(args.device)


# ---- (b) ours ---------------------------------------------------------------------------------------------------


def ours_front_ends(args: argparse.Namespace, llm_hidden: int, tmp: Path) -> tuple[Any, str, dict[str, Any]]:
    """(FrontEnds, the dtype stages cast their inputs to, what was chosen and why)."""
    import torch

    from engines.runtime.factory import torch_front_ends

    choice = args.front_ends
    why = f"--front-ends {choice}"
    providers = ["CUDAExecutionProvider"] if args.device == "cuda" else ["CPUExecutionProvider"]
    if choice == "auto":
        try:
            import onnxruntime as ort

            have = ort.get_available_providers()
        except ImportError:
            have = []
        if args.device == "cuda" and "CUDAExecutionProvider" in have:
            choice, why = "onnx", "auto: onnxruntime has the CUDA provider"
        elif args.device == "cuda":
            choice, why = "torch", f"auto: onnxruntime's providers are {have}, no CUDAExecutionProvider"
        else:
            choice, why = "torch", "auto: on CPU, torch bfloat16 (exporting ViT-L and HuBERT-L to ONNX costs minutes)"
    if choice == "onnx":
        from engines.runtime.factory import ort_front_ends
        from engines.runtime.onnx import OrtGraph
        from export.onnx_export import audio_spec, export_onnx, video_spec

        video, audio = build_front_end_modules(args.size, llm_hidden, "cpu", torch.float32)
        image_size = int(video.clip.config.image_size)
        graphs = []
        t = time.perf_counter()
        for module, spec in ((video, video_spec(NUM_FRAMES, image_size, llm_hidden, 8)),
                             (audio, audio_spec(llm_hidden, 8, int(12 * SAMPLE_RATE)))):
            g = export_onnx(module, spec, tmp, opset=18)
            threads = 1 if args.device == "cuda" else (os.cpu_count() or 2)
            graphs.append(OrtGraph(tmp / g.file, providers, threads, 1, [t.name for t in spec.inputs],
                                   [t.name for t in spec.outputs]))
        del video, audio
        fe = ort_front_ends(*graphs)
        return fe, "float32", {"runtime": "onnx", "providers": providers, "precision": "float32",
                               "export_s": round(time.perf_counter() - t, 2), "why": why}
    dtype = torch.bfloat16 if args.front_dtype == "bfloat16" else torch.float32
    video, audio = build_front_end_modules(args.size, llm_hidden, args.device, dtype)
    return torch_front_ends(video, audio), args.front_dtype, {"runtime": "torch", "precision": args.front_dtype,
                                                               "why": why}


def run_ours(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    import torch

    from engines.llm.transformers_backend import TransformersBackend

    res: dict[str, Any] = {"path": "ours", "decoding": {"greedy": True, "max_new_tokens": args.max_new_tokens},
                           "concurrency": args.concurrency}
    quant = args.llm_quant if args.llm_quant != "auto" else ("int8" if args.device == "cpu" else "none")
    q = sizes(args.size)["qwen3"]
    bf16_llm = qwen3_params(q) * 2
    if bf16_llm > args.max_memory_gb * 2**30:
        res["status"] = "skipped"
        res["reason"] = (f"the bfloat16 LLM it is built from is {bf16_llm / 2**30:.1f} GiB, over --max-memory-gb "
                         f"{args.max_memory_gb:g} on this machine")
        return res
    t = time.perf_counter()
    tok = build_tokenizer(q)
    # built in bfloat16 either way: int8 is made from it block by block, so float32 never exists whole
    model = build_llm(args.size, tok, args.device, torch.bfloat16)
    params = n_params(model)
    llm = TransformersBackend.from_model(model, tok, f"qwen3-{args.size}-random", device=args.device,
                                         quantization=quant, n_ctx=2048, n_threads=os.cpu_count() or 2,
                                         max_num_seqs=args.concurrency)
    llm.prefill_chunk = 256  # load_backend's default, what the pipeline serves with
    del model
    res["llm"] = {"name": llm.name, "quantization": quant, "weights_dtype": "int8" if quant == "int8" else
                  "bfloat16", "activations": str(llm.dtype).removeprefix("torch."), "weights_bytes": llm.model_bytes,
                  "params": params}
    with tempfile.TemporaryDirectory() as d:
        fe, fe_dtype, res["front_ends"] = ours_front_ends(args, llm.hidden_size, Path(d))
        pipe = make_pipeline(args, fe, llm, fe_dtype, args.concurrency)
        sync(args.device)
        res["build_s"] = round(time.perf_counter() - t, 2)
        clips = load_clips(Path(args.clip_cache), args.clip_files)
        warm(args, pipe)
        asyncio.run(_ours_phases(args, pipe, clips, deadline, res))
        pipe.close()
    return res


async def _ours_phases(args: argparse.Namespace, pipe: Any, clips: list[tuple[Any, str]], deadline: float,
                       res: dict[str, Any]) -> None:
    from engines.types import AnalyzeRequest, DoneEvent, LabelEvent
    from server.batching import DynamicBatcher
    from xemo.settings import ServerSettings

    srv = ServerSettings()
    batchers = {n: DynamicBatcher(s, srv.max_batch_size, srv.max_queue_delay_ms, srv.max_queue)
                for n, s in pipe.stages.items()}
    for b in batchers.values():
        b.start()

    async def run(name: str, item: Any) -> Any:
        return await batchers[name].submit(item)

    steps = {"tokens": 0}
    pipe.llm.step_listeners.append(lambda n: steps.__setitem__("tokens", steps["tokens"] + n))

    async def one(k: int, sem: asyncio.Semaphore) -> dict[str, Any]:
        clip, transcript = clips[k % len(clips)]
        async with sem:
            req = AnalyzeRequest(clip=clip, transcript=transcript, labels=LABELS, max_tokens=args.max_new_tokens,
                                 received_at=time.perf_counter())
            row: dict[str, Any] = {"clip": k % len(clips)}
            async for ev in pipe.stream(req, run):
                if isinstance(ev, LabelEvent):
                    row["time_to_label_s"] = round(time.perf_counter() - req.received_at, 4)
                elif isinstance(ev, DoneEvent):
                    a = ev.answer
                    row.update(a.usage)
                    row.update({k2: round(v, 4) for k2, v in a.timings.items() if k2 in (
                        "vision_encode", "audio_encode", "label", "prefill", "decode", "total_s")})
                    row["decode_tokens_per_s"] = decode_rate(row)
            return row

    async def phase(name: str, n: int, concurrency: int) -> None:
        if time.time() > deadline:
            res.setdefault("skipped", []).append(f"phase {name}: out of time budget")
            return
        sem = asyncio.Semaphore(concurrency)
        steps["tokens"] = 0
        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(one(k, sem)) for k in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.time()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall = time.perf_counter() - t0
        rows = [task.result() for task in done if task.exception() is None]
        errors = [repr(task.exception()) for task in done if task.exception() is not None]
        generated = sum(r.get("generated_tokens", 0) for r in rows)
        # decode steps counted by the backend (every sequence's tokens, cancelled ones too) + each first token
        tokens = steps["tokens"] + len(rows)
        res[name] = {
            "requests": n, "completed": len(rows), "concurrency": concurrency, "wall_s": round(wall, 3),
            "stopped_by_budget": bool(pending), "errors": errors,
            "time_to_label_s_p50": p50([r["time_to_label_s"] for r in rows if "time_to_label_s" in r]),
            "time_to_label_s_max": max((r["time_to_label_s"] for r in rows if "time_to_label_s" in r), default=None),
            "total_s_p50": p50([r["total_s"] for r in rows if "total_s" in r]),
            "generated_tokens": generated, "tokens_per_s": round(tokens / wall, 2),
            "decode_tokens_per_s_p50": p50([r["decode_tokens_per_s"] for r in rows if r.get("decode_tokens_per_s")]),
            "requests_per_s": round(len(rows) / wall, 4), "rows": rows,
        }

    await phase("single", 1, 1)
    if args.concurrency > 1:
        await phase("concurrent", args.requests or args.concurrency, args.concurrency)
    for b in batchers.values():
        await b.stop()
    ran = [p for p in ("single", "concurrent") if p in res]
    res["budget_cut"] = any(res[p]["stopped_by_budget"] for p in ran) or bool(res.get("skipped"))
    res["status"] = "skipped" if not ran else ("partial" if res["budget_cut"] else "ran")


# ---- orchestration ----------------------------------------------------------------------------------------------


def decode_rate(row: dict[str, Any]) -> float | None:
    """Tokens/s after the first token: the pipeline's `decode` runs from the generate call to the last token, so
    it holds the prompt's prefill (`prefill`: up to the first token) too."""
    g, decode, prefill = row.get("generated_tokens", 0), row.get("decode"), row.get("prefill")
    if g < 2 or decode is None or prefill is None or decode <= prefill:
        return None
    return round((g - 1) / (decode - prefill), 3)


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda but this torch sees no CUDA device")
        torch.cuda.reset_peak_memory_stats()
    deadline = args.deadline
    t = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    machine = device_info(args.device)
    if args.max_memory_gb is None:
        total = available_bytes() if args.device == "cpu" else machine["card_memory_gb"] * 2**30
        args.max_memory_gb = round(0.6 * total / 2**30, 1)
    if time.time() > deadline:
        res = {"path": args.worker, "status": "skipped", "reason": "out of time budget before building",
               "budget_cut": True}
    else:
        res = run_released(args, deadline) if args.worker == "released" else run_ours(args, deadline)
    res["worker_s"] = round(time.perf_counter() - t, 2)
    # what else the machine ran meanwhile (1, 5, 15 min): CPU timings are only as good as this is low
    res["load_average"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    res["max_memory_gb"] = args.max_memory_gb
    res["machine"] = machine
    res.update(peak_memory(args.device))
    Path(args.worker_out).write_text(json.dumps(res, indent=2))


def run_worker(args: argparse.Namespace, which: str, deadline: float, files: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / f"{which}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", which, "--worker-out", str(out),
               "--deadline", repr(deadline), "--clip-files", *files]
        for key in ("size", "device", "max_new_tokens", "concurrency", "requests", "clip_cache", "front_ends",
                    "front_dtype", "llm_quant", "max_memory_gb"):
            value = getattr(args, key)
            if value is not None:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        # the budget is checked between pieces of work (on CPU one full-size prefill takes minutes); past it by
        # this much the worker is killed
        grace = 60.0 if args.device == "cuda" else max(120.0, 0.25 * args.time_budget_s)
        try:
            r = subprocess.run(cmd, timeout=max(1.0, deadline - time.time()) + grace, text=True,
                               capture_output=True)
        except subprocess.TimeoutExpired:
            return {"path": which, "status": "killed", "reason": f"still running {grace:.0f} s past its budget"}
        if r.returncode != 0 or not out.is_file():
            tail = (r.stderr or r.stdout or "").strip().splitlines()[-15:]
            return {"path": which, "status": "failed", "returncode": r.returncode, "stderr_tail": tail}
        return json.loads(out.read_text())


def ratios(released: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """ours over released where both ran (same run, same clips); time to label as released / ours."""
    rs, single, conc = released.get("summary"), ours.get("single"), ours.get("concurrent")
    if not rs or not single:
        return {}
    out: dict[str, Any] = {}
    if rs.get("time_to_label_s_p50") and single.get("time_to_label_s_p50"):
        out["time_to_label_speedup_single"] = round(rs["time_to_label_s_p50"] / single["time_to_label_s_p50"], 2)
    best = conc or single
    if rs.get("tokens_per_s"):
        out["tokens_per_s_ratio"] = round(best["tokens_per_s"] / rs["tokens_per_s"], 2)
    if rs.get("requests_per_s"):
        out["requests_per_s_ratio"] = round(best["requests_per_s"] / rs["requests_per_s"], 2)
    out["note"] = ("the released path decodes up to the same max_new_tokens with 5 beams; ours decodes greedily "
                   f"{'at concurrency ' + str(best['concurrency']) if conc else 'alone'}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--max-new-tokens", type=int, default=756, help="both paths (756: the released setting)")
    ap.add_argument("--clips", type=int, default=2, help="generated clips (the released path runs each once)")
    ap.add_argument("--clip-seconds", type=float, default=12.0, help="12 s: the released audio cap (~600 tokens)")
    ap.add_argument("--clip-cache", type=Path, default=Path(tempfile.gettempdir()) / "xemo-gpu-xemogpt-clips")
    ap.add_argument("--prepare-clips", action="store_true", help="only make the clips in --clip-cache, then exit")
    ap.add_argument("--concurrency", type=int, default=8, help="ours: requests in flight in the concurrent phase")
    ap.add_argument("--requests", type=int, default=None, help="ours: requests in that phase (default: concurrency)")
    ap.add_argument("--front-ends", choices=["auto", "torch", "onnx"], default="auto")
    ap.add_argument("--front-dtype", choices=["bfloat16", "float32"], default="bfloat16", help="ours, torch runtime")
    ap.add_argument("--llm-quant", choices=["auto", "none", "int8"], default="auto",
                    help="ours: auto = int8 on CPU, none (bfloat16) on CUDA")
    ap.add_argument("--paths", default="released,ours")
    ap.add_argument("--time-budget-s", type=float, default=540.0)
    ap.add_argument("--max-memory-gb", type=float, default=None,
                    help="a path whose weights need more is skipped (default: 60%% of available memory / GPU memory)")
    ap.add_argument("--out", type=Path, default=None)
    # internal: one path in its own process
    ap.add_argument("--worker", choices=["released", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--clip-files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.max_new_tokens < 1 or args.clips < 1 or args.concurrency < 1 or args.time_budget_s <= 0:
        ap.error("--max-new-tokens, --clips and --concurrency must be at least 1 and --time-budget-s positive")
    if args.clip_seconds < 1 or args.clip_seconds > 60:
        ap.error("--clip-seconds must be between 1 and 60")
    if args.worker:
        worker(args)
        return
    t_start = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    deadline = t_start + args.time_budget_s
    clips = make_clips(args.clip_cache, args.clips, args.clip_seconds)
    if args.prepare_clips:
        print(f"{len(clips)} clips in {args.clip_cache}")
        return
    paths = [p for p in args.paths.split(",") if p]
    if not set(paths) <= {"released", "ours"} or not paths:
        ap.error("--paths takes released, ours or both")
    files = [c["file"] for c in clips]
    results: dict[str, Any] = {
        "bench": "gpu_xemogpt", "size": args.size,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("worker", "worker_out", "deadline", "clip_files")},
        "configs": sizes(args.size),
        "clips": clips,
    }
    for i, which in enumerate(paths):
        left = deadline - time.time()
        # the released path gets under half of what is left, so ours always has its turn
        path_deadline = time.time() + 0.45 * left if which == "released" and i + 1 < len(paths) else deadline
        print(f"[{time.time() - t_start:6.1f}s] {which}: budget {path_deadline - time.time():.0f} s", flush=True)
        results[which] = run_worker(args, which, path_deadline, files)
        print(f"[{time.time() - t_start:6.1f}s] {which}: {results[which].get('status')}", flush=True)
    # the machine as the first worker that got going saw it (the parent imports no torch)
    results["machine"] = next((results[p].pop("machine") for p in paths if "machine" in results[p]),
                              {"device": args.device, "cpu": cpu_model()})
    for p in paths:
        results[p].pop("machine", None)
    results["ratios"] = ratios(results.get("released", {}), results.get("ours", {}))
    spent = time.time() - t_start
    stopped = [p for p in paths if results[p].get("status") != "ran"]
    results["budget"] = {"time_budget_s": args.time_budget_s, "wall_s": round(spent, 1),
                         "out_of_budget": any(results[p].get("budget_cut") or results[p].get("status") == "killed"
                                              for p in paths),
                         "not_fully_run": {p: results[p].get("reason") or results[p].get("skipped")
                                           or results[p].get("status") for p in stopped}}
    results["machine"].update(niceness=os.nice(0), load_average_at_start=load_at_start)
    results["definitions"] = {
        "time_to_label_s": "request submitted (clip already decoded) to label; released: to the whole answer, "
                           "whose last sentence names the emotion",
        "tokens_per_s": "generated tokens per second of wall time, whole requests (front ends, label, prefill "
                        "included); ours: all sequences of the phase together",
        "decode_tokens_per_s": "per sequence, tokens after the first per second after the first",
        "requests_per_s": "completed requests per second of wall time",
        "peak_memory_bytes": "per path, in its own process: see peak_memory_kind",
    }
    results["note"] = (
        "random weights from the published configurations: speed and memory only, the text is noise; the "
        "tokenizer is a small byte-level BPE standing in for Qwen's, so the prompt's text part is longer than "
        "Qwen's tokenizer would make it (prompt_tokens_text in each row)"
        + ("; CPU timings depend on what else the machine ran (niceness and load average under machine)"
           if args.device == "cpu" else ""))
    out = args.out or ROOT / "bench" / "results" / f"gpu_xemogpt_{args.device}_{args.size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(summary(results))
    print(f"wrote {out}")


def summary(results: dict[str, Any]) -> str:
    lines = [f"{results['size']} on {results['machine'].get('card') or results['machine']['cpu']}"]
    r = results.get("released", {})
    if r.get("summary"):
        s = r["summary"]
        lines.append(f"released: time to label p50 {s['time_to_label_s_p50']} s, {s['tokens_per_s']} tok/s, "
                     f"{s['requests_per_s']} req/s, peak {r['peak_memory_bytes'] / 2**30:.2f} GiB")
    elif r:
        lines.append(f"released: {r.get('status')} ({r.get('reason') or r.get('stderr_tail')})")
    o = results.get("ours", {})
    for phase in ("single", "concurrent"):
        if phase in o:
            s = o[phase]
            lines.append(f"ours {phase} (x{s['concurrency']}): time to label p50 {s['time_to_label_s_p50']} s, "
                         f"{s['tokens_per_s']} tok/s, {s['requests_per_s']} req/s")
    if o:
        lines.append(f"ours: {o.get('status')}, peak {o.get('peak_memory_bytes', 0) / 2**30:.2f} GiB"
                     + (f" ({o.get('reason') or o.get('stderr_tail')})" if o.get("status") in ("failed", "skipped")
                        else ""))
    if results["budget"]["out_of_budget"]:
        lines.append(f"OUT OF TIME BUDGET: {results['budget']['not_fully_run']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""The self-contained serving bundle written by `xemo convert-checkpoint` and read via `xemogpt.bundle: DIR`.

Layout:
    manifest.json         format, versions, token width, pad id, LoRA r/alpha (merged), load report, files
    bridges.safetensors   VECB + AECB layers, temporal position embedding, both projectors (our names)
    clip/                 CLIP vision tower + image processor (the weights actually served)
    hubert/               HuBERT + feature extractor
    llm/                  the LoRA-merged LLM as a Hugging Face dir (+ tokenizer)
    llm.gguf              the same as GGUF, only with --gguf and only if llama.cpp's converter is installed
Later starts need neither PEFT nor the original checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from engines.errors import CheckpointMismatch, ModelError
from engines.xemogpt.audio import AudioFrontEnd
from engines.xemogpt.checkpoint import TRAINED_PREFIXES, read_state_dict
from engines.xemogpt.model import (
    DTYPES,
    Sources,
    build_front_ends,
    from_checkpoint,
    gguf_meta,
    image_size_of,
    load_processors,
    merge_llm,
    pad_id_of,
    quiet_transformers,
    require,
    split_llm,
)
from engines.xemogpt.video import VideoFrontEnd
from xemo.settings import XEmoGPTSettings

log = logging.getLogger(__name__)

FORMAT = "xemo-xemogpt-bundle"
VERSION = 1


def bridge_state(video: VideoFrontEnd, audio: AudioFrontEnd) -> dict[str, torch.Tensor]:
    """The trained (non-encoder) weights under our names, e.g. `video.visual_llm_project.weight`."""
    sd = {f"video.{k}": v for k, v in video.state_dict().items()}
    sd |= {f"audio.{k}": v for k, v in audio.state_dict().items()}
    return {k: v.detach().contiguous().cpu() for k, v in sd.items() if k.startswith(TRAINED_PREFIXES)}


def write_bundle(x: XEmoGPTSettings, out: Path, gguf: bool = False) -> dict[str, Any]:
    """Convert the configured checkpoint; returns the manifest. `gguf_error` in it says why no GGUF was made."""
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    quiet_transformers()
    clip_dir, hubert_dir = require(x, "clip"), require(x, "hubert")
    llm_dir = require(x, "llm")  # a HF dir: LoRA cannot be merged into a GGUF
    ckpt = require(x, "checkpoint", "file")
    front_sd, llm_sd = split_llm(read_state_dict(ckpt))
    dtype = DTYPES[x.dtype]
    model, tok, llm_report = merge_llm(llm_dir, llm_sd, x, dtype)
    hidden = int(model.config.hidden_size)
    report: dict[str, Any] = {"llm": llm_report.to_dict()}
    video, audio = build_front_ends(clip_dir, hubert_dir, hidden, x.num_frames, front_sd, x.lora_r,
                                    x.lora_alpha, report)

    out.mkdir(parents=True, exist_ok=True)
    save_file(bridge_state(video, audio), str(out / "bridges.safetensors"))
    image_processor, feature_extractor = load_processors(clip_dir, hubert_dir)
    video.clip.save_pretrained(out / "clip")
    image_processor.save_pretrained(out / "clip")
    audio.hubert.save_pretrained(out / "hubert")
    feature_extractor.save_pretrained(out / "hubert")
    model.save_pretrained(out / "llm")
    tok.save_pretrained(out / "llm")
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "created_by": "xemo convert-checkpoint",
        "source_checkpoint": ckpt.name, "num_frames": x.num_frames, "llm_hidden": hidden,
        "pad_token_id": pad_id_of(tok), "dtype": x.dtype,
        "lora": {"r": x.lora_r, "alpha": x.lora_alpha, "merged": bool(llm_report.lora_merged)},
        "report": report, "files": {"bridges": "bridges.safetensors", "clip": "clip", "hubert": "hubert",
                                    "llm": "llm"},
    }
    if gguf:
        err = _write_gguf(out / "llm", out / "llm.gguf")
        if err:
            manifest["gguf_error"] = err
        else:
            manifest["files"]["llm_gguf"] = "llm.gguf"
    manifest["convert_s"] = round(time.perf_counter() - t0, 3)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _gguf_converter() -> list[str] | None:
    """llama.cpp's convert_hf_to_gguf.py if an installed package or PATH provides it (never downloaded)."""
    import importlib.util

    if importlib.util.find_spec("convert_hf_to_gguf") is not None:
        return [sys.executable, "-m", "convert_hf_to_gguf"]
    for name in ("convert_hf_to_gguf.py", "convert-hf-to-gguf.py", "convert_hf_to_gguf"):
        exe = shutil.which(name)
        if exe:
            return [sys.executable, exe] if exe.endswith(".py") else [exe]
    spec = importlib.util.find_spec("llama_cpp")
    if spec and spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            for cand in Path(base).rglob("convert_hf_to_gguf.py"):
                return [sys.executable, str(cand)]
    return None


def _write_gguf(hf_dir: Path, out: Path) -> str | None:
    cmd = _gguf_converter()
    if cmd is None:
        return ("GGUF not written: llama.cpp's convert_hf_to_gguf.py is not available in any installed package "
                "or on PATH; run it on the bundle's llm/ dir where llama.cpp is checked out")
    try:
        subprocess.run([*cmd, str(hf_dir), "--outfile", str(out), "--outtype", "f16"], check=True,
                       capture_output=True, timeout=3600)
    except (subprocess.SubprocessError, OSError) as e:
        return f"GGUF not written: the converter failed ({type(e).__name__})"
    return None


def read_manifest(bundle: Path) -> dict[str, Any]:
    path = bundle / "manifest.json"
    if not bundle.is_dir():
        raise ModelError(f"xemogpt.bundle: directory not found: {bundle}")
    if not path.is_file():
        raise ModelError(f"xemogpt.bundle: {bundle} has no manifest.json; write it with `xemo convert-checkpoint`")
    try:
        m = json.loads(path.read_text())
    except ValueError:
        raise ModelError(f"xemogpt.bundle: {path} is not valid JSON") from None
    if m.get("format") != FORMAT or m.get("version") != VERSION:
        raise ModelError(f"xemogpt.bundle: {bundle} is not a {FORMAT} v{VERSION} bundle")
    for key in ("bridges", "clip", "hubert"):
        if not (bundle / m["files"][key]).exists():
            raise ModelError(f"xemogpt.bundle: {bundle} is missing {m['files'][key]}")
    return m


def from_bundle(x: XEmoGPTSettings) -> Sources:
    """Everything from the bundle: no checkpoint, no PEFT merge."""
    from safetensors.torch import load_file

    assert x.bundle is not None
    quiet_transformers()
    bundle = Path(x.bundle)
    ignored = [k for k in ("clip", "hubert", "llm", "checkpoint") if getattr(x, k) is not None]
    if ignored:
        log.info("xemogpt.bundle is set: xemogpt.%s not used (the bundle holds them)", ", xemogpt.".join(ignored))
    m = read_manifest(bundle)
    clip_dir, hubert_dir = bundle / m["files"]["clip"], bundle / m["files"]["hubert"]
    if x.llm_backend == "llama_cpp":
        if "llm_gguf" not in m["files"]:
            raise ModelError("xemogpt.bundle: has no llm.gguf for llm_backend llama_cpp; use llm_backend "
                             "transformers or convert with --gguf where llama.cpp's converter is installed")
        llm_path = bundle / m["files"]["llm_gguf"]
        pad, hidden = gguf_meta(llm_path)
    else:
        llm_path = bundle / m["files"]["llm"]
        pad, hidden = int(m["pad_token_id"]), int(m["llm_hidden"])
    image_processor, feature_extractor = load_processors(clip_dir, hubert_dir)
    num_frames = int(m["num_frames"])

    def build() -> tuple[VideoFrontEnd, AudioFrontEnd]:
        video, audio = build_front_ends(clip_dir, hubert_dir, hidden, num_frames, None, 0, 0)
        sd = load_file(str(bundle / m["files"]["bridges"]))
        for prefix, module in (("video.", video), ("audio.", audio)):
            part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            try:
                missing, _ = module.load_state_dict(part, strict=False)
            except RuntimeError as e:  # size mismatch
                raise CheckpointMismatch(f"xemogpt.bundle: bridges do not fit the encoders: {e}") from None
            lost = [k for k in missing if (prefix + k).startswith(TRAINED_PREFIXES)]
            if lost:
                raise CheckpointMismatch(f"xemogpt.bundle: bridges.safetensors lacks {prefix}{lost[0]}")
        return video.eval(), audio.eval()

    return Sources(build, image_processor, feature_extractor, llm_path, pad, hidden,
                   image_size_of(clip_dir), {"clip": None, "hubert": None, "checkpoint": None},
                   {"bundle": m.get("report", {})})


def load_sources(x: XEmoGPTSettings) -> Sources:
    """The bundle when `xemogpt.bundle` is set, else the encoders + checkpoint."""
    return from_bundle(x) if x.bundle is not None else from_checkpoint(x)

"""Assembling XEmoGPT from the settings: encoders + released checkpoint, or a converted serving bundle.

Two ways in, one result (`Sources`): how to build the PyTorch front ends (lazily: the ONNX / TensorRT runtimes
never build them), the image processor and feature extractor (needed by every runtime), and the LLM path for
engines.llm.load_backend. With a checkpoint whose LoRA must be merged, the merged LLM is written to a
temporary directory at every start; `xemo convert-checkpoint` does it once (see bundle.py).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.errors import ModelError
from engines.xemogpt.audio import AudioFrontEnd, load_hubert
from engines.xemogpt.checkpoint import LoadReport, apply_checkpoint, read_state_dict
from engines.xemogpt.video import VideoFrontEnd, load_clip
from xemo.settings import XEmoGPTSettings

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Sources:
    build_modules: Callable[[], tuple[VideoFrontEnd, AudioFrontEnd]]
    image_processor: Any
    feature_extractor: Any
    llm_path: Path
    pad_token_id: int
    llm_hidden: int
    image_size: int
    weight_files: dict[str, Path | None]  # hashed by export/ to check its artefacts match (None: not checked)
    report: dict[str, Any] = field(default_factory=dict)
    tmpdir: Path | None = None  # merged LLM written at start; removed by close()

    def __post_init__(self) -> None:
        # a start that fails later, or a process that never calls close(), must not leave a merged LLM
        # (gigabytes) behind in /tmp
        if self.tmpdir is not None:
            weakref.finalize(self, shutil.rmtree, self.tmpdir, True)

    def close(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def quiet_transformers() -> None:
    """No per-load progress bars from transformers in server logs or CLI output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def require(x: XEmoGPTSettings, key: str, kind: str = "dir") -> Path:
    """The path setting `xemogpt.<key>`, checked; errors name the key."""
    value = getattr(x, key)
    if value is None:
        raise ModelError(f"xemogpt.{key}: not set (profile xemogpt needs it, or xemogpt.bundle)")
    p = Path(value)
    if kind == "dir" and not p.is_dir():
        raise ModelError(f"xemogpt.{key}: directory not found: {p}")
    if kind == "file" and not p.is_file():
        raise ModelError(f"xemogpt.{key}: file not found: {p}")
    if kind == "any" and not p.exists():
        raise ModelError(f"xemogpt.{key}: not found: {p}")
    return p


def split_llm(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(front-end keys, LLM keys) of a released state dict."""
    llm = {k: v for k, v in sd.items() if k.startswith("llm_model.")}
    return {k: v for k, v in sd.items() if k not in llm}, llm


def build_front_ends(clip_dir: Path, hubert_dir: Path, llm_hidden: int, num_frames: int,
                     front_sd: dict[str, torch.Tensor] | None, lora_r: int, lora_alpha: int,
                     report: dict[str, Any] | None = None) -> tuple[VideoFrontEnd, AudioFrontEnd]:
    clip, _ = load_clip(clip_dir)
    hubert, _ = load_hubert(hubert_dir)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # untrained bridges (no checkpoint) are at least the same on every start
        video = VideoFrontEnd(clip, llm_hidden, num_frames=num_frames)
        audio = AudioFrontEnd(hubert, llm_hidden)
    if front_sd is not None:
        r = apply_checkpoint(front_sd, video, audio, None, lora_r, lora_alpha)
        if report is not None:
            report["front_ends"] = r.to_dict()
    return video.eval(), audio.eval()


def load_hf_llm(path: Path) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise ModelError(f"xemogpt.llm: cannot load a Hugging Face causal LM from {path}: {e}") from None
    return model.eval(), tok


def merge_llm(llm_dir: Path, llm_sd: dict[str, torch.Tensor], x: XEmoGPTSettings,
              dtype: torch.dtype) -> tuple[nn.Module, Any, LoadReport]:
    """The HF LLM with the checkpoint's LoRA merged (and any differing frozen copies applied)."""
    model, tok = load_hf_llm(llm_dir)
    report = apply_checkpoint(llm_sd, None, None, model, x.lora_r, x.lora_alpha)
    return model.to(dtype), tok, report


def pad_id_of(tok: Any) -> int:
    pad = tok.pad_token_id
    if pad is None:  # Qwen uses <|endoftext|> as pad; the released BOS is the pad embedding
        pad = tok.eos_token_id
    if pad is None:
        raise ModelError("xemogpt.llm: the tokenizer has neither a pad nor an eos token")
    return int(pad)


def gguf_meta(path: Path) -> tuple[int, int]:
    """(pad token id, hidden size) from a GGUF file's metadata."""
    from gguf import GGUFReader

    r = GGUFReader(str(path))

    def field_int(name: str) -> int | None:
        f = r.fields.get(name)
        return None if f is None else int(f.parts[f.data[0]][0])

    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    pad = field_int("tokenizer.ggml.padding_token_id")
    pad = pad if pad is not None else field_int("tokenizer.ggml.eos_token_id")
    hidden = field_int(f"{arch}.embedding_length")
    if pad is None or hidden is None:
        raise ModelError(f"xemogpt.llm: {path.name} lacks pad/eos token or embedding length metadata")
    return pad, hidden


def from_checkpoint(x: XEmoGPTSettings) -> Sources:
    """Encoders from xemogpt.clip / .hubert, bridges + LoRA from xemogpt.checkpoint, LLM from xemogpt.llm.

    Without a checkpoint the bridges and projectors are untrained (seeded random): the text is meaningless,
    but the whole path runs with the real encoders and LLM (latency and memory before the checkpoint is
    at hand). That is logged as a warning and shown in the report.
    """
    quiet_transformers()
    clip_dir, hubert_dir = require(x, "clip"), require(x, "hubert")
    llm_path = require(x, "llm", "any")
    report: dict[str, Any] = {}
    ckpt: Path | None = None
    front_sd: dict[str, torch.Tensor] | None = None
    llm_sd: dict[str, torch.Tensor] = {}
    proj: torch.Tensor | None = None
    if x.checkpoint is None:
        log.warning("xemogpt.checkpoint is not set: the cue bridges and projectors are UNTRAINED")
        report["checkpoint"] = "none: bridges and projectors untrained (seed 0)"
    else:
        ckpt = require(x, "checkpoint", "file")
        front_sd, llm_sd = split_llm(read_state_dict(ckpt))
        proj = front_sd.get("visual_llm_project.weight")
        if proj is None:
            raise ModelError("xemogpt.checkpoint: no visual_llm_project.weight, not an XEmoGPT checkpoint")
    tmpdir: Path | None = None
    needs_merge = bool(llm_sd)  # LoRA deltas (or LLM copies) to apply
    if llm_path.is_file():  # GGUF: cannot merge into quantised weights here
        if needs_merge:
            raise ModelError("xemogpt.llm: a GGUF file cannot take the checkpoint's LoRA weights; run "
                             "`xemo convert-checkpoint` with xemogpt.llm set to the Hugging Face dir")
        pad, hidden = gguf_meta(llm_path)
    elif needs_merge:
        model, tok, r = merge_llm(llm_path, llm_sd, x, DTYPES[x.dtype])
        report["llm"] = r.to_dict()
        assert ckpt is not None
        tmpdir = Path(tempfile.mkdtemp(prefix=f"xemo-merged-{ckpt.stem}-"))
        log.info("writing the LoRA-merged LLM to %s (run `xemo convert-checkpoint` once to skip this)", tmpdir)
        model.save_pretrained(tmpdir)
        tok.save_pretrained(tmpdir)
        pad, hidden = pad_id_of(tok), int(model.config.hidden_size)
        del model
        llm_path = tmpdir
    else:
        from transformers import AutoConfig, AutoTokenizer

        pad = pad_id_of(AutoTokenizer.from_pretrained(llm_path))
        hidden = int(AutoConfig.from_pretrained(llm_path).hidden_size)
    if proj is not None and int(proj.shape[0]) != hidden:
        raise ModelError(f"checkpoint key visual_llm_project.weight: projects to {proj.shape[0]} but the LLM "
                         f"(xemogpt.llm) has hidden size {hidden}")
    image_processor, feature_extractor = load_processors(clip_dir, hubert_dir)

    def build() -> tuple[VideoFrontEnd, AudioFrontEnd]:
        return build_front_ends(clip_dir, hubert_dir, hidden, x.num_frames, front_sd, x.lora_r, x.lora_alpha,
                                report)

    return Sources(build, image_processor, feature_extractor, llm_path, pad, hidden,
                   image_size_of(clip_dir), {"clip": clip_dir, "hubert": hubert_dir, "checkpoint": ckpt},
                   report, tmpdir)


def load_processors(clip_dir: Path, hubert_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoImageProcessor, Wav2Vec2FeatureExtractor
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "falls back to the PIL processor without torchvision": expected here
    try:
        return AutoImageProcessor.from_pretrained(clip_dir), Wav2Vec2FeatureExtractor.from_pretrained(hubert_dir)
    finally:
        hf_logging.set_verbosity(verbosity)


def image_size_of(clip_dir: Path) -> int:
    from transformers import CLIPVisionConfig

    return int(CLIPVisionConfig.from_pretrained(clip_dir).image_size)

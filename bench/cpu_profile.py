"""CPU-seconds per request of the lite profile, by stage, over every process that serves it.

The lite server is one process (perception, VADER and the LLM run in it) plus the warm decoder workers of
engines/ingest/pool.py. This bench loads the same pipeline in-process, runs each request's stages one after
another (the serving path runs visual and audio concurrently; the CPU they spend is the same), and charges:

- the process's own CPU (`time.process_time`: every thread, ONNX Runtime, MediaPipe and llama.cpp pools
  included) to the innermost stage that is running, so nested stages are counted once (self time);
- the decoder workers' CPU (/proc/PID/stat utime + stime, their children's too) to ingest.

Stages: ingest (demux + decode in the workers, upload handling here), face detection + mesh, FER, the rest of
the visual stage (geometry, shots, cue rules), VAD, pitch, voice quality, the rest of the audio stage (resample,
levels, syllables, laughter, cue rules), verbal (VADER), ASR when the pipeline has one, label prefill (the label
log-likelihood pass), explanation decode, and what is left (prompt building, the event loop, thread wake-ups).

Clips: the generated 10 s clip (tests/media.py, as bench/analyze.py makes it) and the dev clips under
../shared/samples/dev (skipped when absent), with their manifest transcripts. CPU-seconds move less than wall time
when other work shares the machine, but not zero (cache and frequency effects, spin-waits): the JSON says how
loaded the machine was.

    .venv/bin/python bench/cpu_profile.py [--runs 1] [--out bench/results/cpu_profile.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import real_clips  # noqa: E402
from analyze import make_clip  # noqa: E402
from procs import cpu_s  # noqa: E402

from engines.ingest import ingest  # noqa: E402
from engines.ingest import warmup as ingest_warmup  # noqa: E402
from engines.ingest.pool import get_pool  # noqa: E402
from engines.pipeline import build_pipeline  # noqa: E402
from engines.types import AnalyzeRequest  # noqa: E402
from xemo.settings import Settings  # noqa: E402

STAGES = ("ingest", "face_mesh", "fer", "visual_other", "vad", "pitch", "voice_quality", "audio_other", "verbal",
          "asr", "label_prefill", "explanation_decode", "other")
class Meter:
    """Self CPU per stage: the process CPU between enter and exit, less that of stages nested inside."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []  # [stage, start, nested]

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        frame = [name, time.process_time(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            spent = time.process_time() - frame[1]
            self.cpu[name] += spent - frame[2]
            if self._stack:
                self._stack[-1][2] += spent

    def wrap(self, name: str, fn: Callable) -> Callable:
        def inner(*a: Any, **kw: Any) -> Any:
            with self.stage(name):
                return fn(*a, **kw)

        return inner

    def wrap_async(self, name: str, fn: Callable) -> Callable:
        async def inner(*a: Any, **kw: Any) -> Any:
            with self.stage(name):
                return await fn(*a, **kw)

        return inner

    def wrap_agen(self, name: str, fn: Callable) -> Callable:
        """An async generator: only the time inside its steps is charged, not the consumer's work between them."""
        async def inner(*a: Any, **kw: Any) -> Any:
            gen = fn(*a, **kw)
            try:
                while True:
                    with self.stage(name):
                        try:
                            item = await gen.__anext__()
                        except StopAsyncIteration:
                            return
                    yield item
            finally:
                with self.stage(name):
                    await gen.aclose()

        return inner


def instrument(pipeline: Any, meter: Meter) -> None:
    """Route the stages' inner calls through the meter (this process only; nothing is changed on disk)."""
    from engines.perception.audio import perceiver as audio_mod
    from engines.perception.audio import prosody

    vis = pipeline.stages["visual"].perceiver
    aud = pipeline.stages["audio"].perceiver
    vis.mesher.detect = meter.wrap("face_mesh", vis.mesher.detect)
    if vis.fer is not None:
        vis.fer.predict = meter.wrap("fer", vis.fer.predict)
    aud.vad.segments = meter.wrap("vad", aud.vad.segments)
    prosody.pitch_track = meter.wrap("pitch", prosody.pitch_track)
    audio_mod.voice_quality_features = meter.wrap("voice_quality", audio_mod.voice_quality_features)
    for name in ("visual", "audio"):
        st = pipeline.stages[name]
        st.run_batch = meter.wrap(f"{name}_other", st.run_batch)
    if "asr" in pipeline.stages:
        st = pipeline.stages["asr"]
        st.run_batch = meter.wrap("asr", st.run_batch)
    from engines.perception import verbal

    verbal.verbal_cues = meter.wrap("verbal", verbal.verbal_cues)
    if pipeline.llm is None:
        return
    pipeline.llm.score_choices = meter.wrap_async("label_prefill", pipeline.llm.score_choices)
    pipeline.llm.generate = meter.wrap_agen("explanation_decode", pipeline.llm.generate)


class _Perceived:
    """What --perception-only reports per request, shaped like the fields of an Answer this bench reads."""

    def __init__(self, cues: list[Any]) -> None:
        self.emotion = {"label": None}
        self.cues = cues
        self.usage: dict[str, int] = {}


def perceive_only(pipeline: Any, clip: Any, transcript: str | None) -> _Perceived:
    from engines.perception import verbal

    frames, times = real_clips.perceived_frames(clip, pipeline.lite)
    cues: list[Any] = []
    if frames is not None and len(frames):
        (vis,) = pipeline.stages["visual"].run_batch([(frames, times)])
        cues += vis.cues
    if clip.audio is not None:
        (aud,) = pipeline.stages["audio"].run_batch([(clip.audio, clip.sample_rate)])
        cues += aud.cues
    cues += verbal.verbal_cues(transcript).cues
    return _Perceived(cues)


def serial_runner(pipeline: Any) -> Callable:
    async def run(name: str, item: Any) -> Any:
        (out,) = pipeline.stages[name].run_batch([item])
        return out

    return run


def one_request(pipeline: Any, meter: Meter, path: Path, transcript: str | None,
                max_tokens: int | None = None) -> dict[str, Any]:
    settings = pipeline.settings.ingest
    pool = get_pool(settings.decode_workers, settings.worker_memory_mb, settings.worker_nice)
    meter.cpu.clear()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    w0 = {pid: cpu_s([pid]) for pid in pool.pids()}
    with meter.stage("ingest"):
        clip = ingest(path, None, settings)
    w1 = {pid: cpu_s([pid]) for pid in pool.pids()}
    # a worker recycled during the job is counted by its replacement's full time (a lower bound for the old one)
    workers = sum(w1[p] - w0.get(p, 0.0) for p in w1)
    with meter.stage("other"):
        if pipeline.llm is None:  # --perception-only: the pipeline's perception stages, no LLM
            answer = perceive_only(pipeline, clip, transcript)
        else:
            answer = asyncio.run(pipeline.analyze(
                AnalyzeRequest(clip=clip, transcript=transcript, max_tokens=max_tokens), serial_runner(pipeline)))
    total_here = time.process_time() - cpu0
    row = {k: meter.cpu.get(k, 0.0) for k in STAGES}
    row["ingest"] += workers
    row["total"] = total_here + workers
    row["wall_s"] = time.perf_counter() - wall0
    row["decoder_workers"] = workers
    return {"cpu_s": row, "label": answer.emotion["label"], "cues": [_public(c.text) for c in answer.cues],
            "generated_tokens": answer.usage.get("generated_tokens"),
            "frames": 0 if clip.timeline is None else len(clip.timeline),
            "frame_size": None if clip.timeline is None or not len(clip.timeline) else list(clip.timeline.shape[1:3])}


def median_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 4) for k in rows[0]}


def recognised(pipeline: Any, path: Path) -> str | None:
    """What the pipeline's ASR stage hears in a clip (None without an ASR stage or speech)."""
    if "asr" not in pipeline.stages:
        return None
    clip = ingest(path, None, pipeline.settings.ingest)
    if clip.audio is None:
        return None
    from engines.perception.asr import english_text

    (heard,) = pipeline.stages["asr"].run_batch([(clip.audio, clip.sample_rate)])
    text = " ".join((english_text(heard.transcript) or "").split()) if heard is not None else ""
    return text or None


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1,
                    help="measured rounds over the clips (after one warm-up request); each clip's median is kept")
    ap.add_argument("--samples", type=Path, default=real_clips.SAMPLES)
    ap.add_argument("--no-generated", action="store_true", help="skip the generated 10 s clip")
    ap.add_argument("--max-tokens", type=int, default=None, help="cap the explanation (default: the settings')")
    ap.add_argument("--perception-only", action="store_true",
                    help="ingest and the perception stages only (no LLM is loaded; label and decode read 0)")
    ap.add_argument("--transcribe-missing", action="store_true",
                    help="give every dev clip a transcript: the manifest's, else what ASR recognises once before "
                         "the measured runs (not counted), so no measured request runs ASR")
    ap.add_argument("--note", default="", help="what else shared the machine, for the JSON")
    ap.add_argument("--out", type=Path, default=real_clips.RESULTS / "cpu_profile.json")
    args = ap.parse_args()

    settings = Settings()
    pipeline = build_pipeline(settings)
    if args.perception_only:
        from engines.lite.pipeline import AudioStage, VisualStage
        from engines.perception.verbal import warm_up

        pipeline.stages = {"visual": VisualStage(settings.lite), "audio": AudioStage(settings.lite)}
        for st in pipeline.stages.values():
            st.warmup()
        warm_up()
    else:
        pipeline.load()
        pipeline.warmup()
    ingest_warmup(settings.ingest)
    meter = Meter()
    instrument(pipeline, meter)
    load_before = loadavg()
    started = time.time()

    with tempfile.TemporaryDirectory() as d:
        clips: list[tuple[str, Path, str | None]] = []
        if not args.no_generated:
            clips.append(("generated_10s", make_clip(Path(d)), None))
        dev = [rc for rc in real_clips.listing(args.samples) if rc.path.parent.name == "dev"]
        clips += [(rc.id, rc.path, rc.transcript) for rc in dev]
        if args.transcribe_missing:
            clips = [(cid, path, t if t is not None else recognised(pipeline, path)) for cid, path, t in clips]
        # warm-up: the lazy paths of the first request
        one_request(pipeline, meter, clips[0][1], clips[0][2], args.max_tokens)
        # Rounds over all the clips, so no request follows its own repeat: the LLM's prefix cache would still hold
        # that request's whole prompt and its label prefill would cost almost nothing.
        done: dict[str, list[dict[str, Any]]] = {cid: [] for cid, _, _ in clips}
        for _ in range(max(1, args.runs)):
            for cid, path, transcript in clips:
                done[cid].append(one_request(pipeline, meter, path, transcript, args.max_tokens))
        results = []
        for cid, _, transcript in clips:
            runs = done[cid]
            results.append({"clip": cid, "transcript_given": transcript is not None,
                            "transcript_from": "manifest" if any(rc.id == cid and rc.transcript for rc in dev)
                            else ("asr, before the runs" if transcript is not None else None), **runs[-1],
                            "cpu_s": median_rows([r["cpu_s"] for r in runs])})
    pipeline.close()

    dev_rows = [r["cpu_s"] for r in results if r["clip"] != "generated_10s"]
    summary: dict[str, Any] = {}
    if dev_rows:
        summary["dev_mean_cpu_s"] = {k: round(statistics.fmean(r[k] for r in dev_rows), 4) for k in dev_rows[0]}
    out = {
        "what": "CPU-seconds per request by stage (self time), lite profile, all server processes",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": loadavg(),
                    "note": args.note or "CPU-seconds are less sensitive than wall time to other work on the "
                                         "machine, but cache contention and spin-waits still inflate them"},
        "model": pipeline.model, "max_tokens": args.max_tokens,
        "llm_backend": None if args.perception_only else settings.lite.llm_backend,
        "runs_per_clip": args.runs, "order": "rounds over the clips: no request follows its own repeat",
        "started_unix": round(started),
        "settings": {"long_side": settings.ingest.long_side, "timeline_fps": settings.ingest.timeline_fps,
                     "max_timeline_frames": settings.lite.max_timeline_frames},
        "clips": results, **summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print_table(results, summary)
    print(f"wrote {args.out}")


def print_table(results: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    cols = [*STAGES, "total", "wall_s"]
    short = {"visual_other": "vis_oth", "audio_other": "aud_oth", "voice_quality": "voiceq",
             "label_prefill": "label", "explanation_decode": "decode", "face_mesh": "face"}
    head = f"{'clip':18s}" + "".join(f"{short.get(c, c)[:7]:>8s}" for c in cols)
    print(head)
    for r in results:
        print(f"{r['clip'][:18]:18s}" + "".join(f"{r['cpu_s'][c]:8.3f}" for c in cols))
    mean = summary.get("dev_mean_cpu_s")
    if mean:
        print(f"{'dev mean':18s}" + "".join(f"{mean[c]:8.3f}" for c in cols))
        top = sorted(STAGES, key=lambda k: -mean[k])[:4]
        print("top costs on the dev clips: " + ", ".join(
            f"{k} {mean[k]:.3f} s ({100 * mean[k] / mean['total']:.0f} %)" for k in top))



def _public(cue_text: str) -> str:
    """Cue text fit for a committed result: the shared clips' transcripts are research-only, so quotes go."""
    return 'says: "[transcript]"' if cue_text.startswith('says: "') else cue_text

if __name__ == "__main__":
    main()

"""Latency of the lite audio and verbal front ends: VAD, pyin, other measures, cues, whole perceive().

Builds a 10 s clip with espeak-ng (the loud/high/fast sentence, then the soft/low/slow one, then silence, as in
offline-components.md) and uses the shared sample if present. Prints medians over runs after a warm-up and
writes bench/results/perception_audio.json.

`--real-clips` instead reports what perception finds on the real clips (the shared sample and the dev clips,
ingested like a request, with their transcripts where known): speech found (by detection, and after reconciling
with the transcript), auditory and verbal cues per clip, unresolved opposite pairs. It writes
bench/results/perception_audio_real_clips.json.

    .venv/bin/python bench/perception_audio.py [--runs 7] [--real-clips [--samples DIR]]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import media  # noqa: E402
import real_clips  # noqa: E402

from engines.perception.audio import AudioPerceiver, prosody  # noqa: E402
from engines.perception.audio.cues import vocal_cues  # noqa: E402
from engines.perception.audio.laughter import laughter_bursts  # noqa: E402
from engines.perception.audio.reconcile import reconcile_speech  # noqa: E402
from engines.perception.audio.voice_quality import voice_quality_features  # noqa: E402
from engines.perception.opposites import unresolved_opposites  # noqa: E402
from engines.perception.verbal import verbal_cues  # noqa: E402
from xemo.settings import LiteSettings  # noqa: E402


def median_ms(fn, runs: int) -> float:  # noqa: ANN001
    """Median wall time; the CPU-time median of the same runs goes to LAST_CPU (the 2-core test VMs are shared;
    this work is single-threaded, so CPU time is what an idle machine's wall time would be)."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    LAST_CPU.append(round(statistics.median(cpu), 2))
    return round(statistics.median(wall), 2)


LAST_CPU: list[float] = []  # CPU-time median of the latest median_ms call


def ten_second_clip(tmp: Path) -> np.ndarray:
    a, _ = sf.read(media.aroused_speech(tmp / "a.wav"), dtype="float32")
    c, _ = sf.read(media.calm_speech(tmp / "c.wav"), dtype="float32")
    x = np.zeros(10 * 16000, np.float32)
    both = np.concatenate([a, c])[: len(x)]
    x[: len(both)] = both
    return x


def stages(p: AudioPerceiver, x: np.ndarray, runs: int) -> dict[str, dict[str, float]]:
    segs = p.vad.segments(x)
    f0, voiced = prosody.pitch_track(x, segs)
    lv = prosody.frame_levels(x)
    tr = prosody.Tracks(prosody.HOP / prosody.SR, lv, f0, voiced, prosody.speech_mask(segs, len(lv)))
    feats = {**prosody.prosody_features(x, tr, segs, len(x) / 16000), **voice_quality_features(x, tr)}
    work = {
        "vad": lambda: p.vad.segments(x),
        "pyin": lambda: prosody.pitch_track(x, segs),
        "prosody": lambda: prosody.prosody_features(x, tr, segs, len(x) / 16000),
        "voice_quality": lambda: voice_quality_features(x, tr),
        "cues": lambda: vocal_cues(feats, tr, segs),
        "laughter": lambda: laughter_bursts(x),
        "perceive_total": lambda: p.perceive(x, 16000),
    }
    out: dict[str, dict[str, float]] = {"wall_ms": {}, "cpu_ms": {}}
    for name, fn in work.items():
        out["wall_ms"][name] = median_ms(fn, runs)
        out["cpu_ms"][name] = LAST_CPU[-1]
    return out


def real_clip_cues(root: Path) -> dict:
    """Speech found and auditory / verbal cues per real clip, as the lite pipeline's stages report them."""
    p = AudioPerceiver(LiteSettings())
    out: dict = {"host": platform.node(), "cpus": os.cpu_count(), "clips": {}}
    for rc, clip in real_clips.clips(root):
        res = p.perceive(clip.audio, clip.sample_rate) if clip.audio is not None else None
        reconciled = reconcile_speech(res, rc.transcript)
        verbal = verbal_cues(rc.transcript).cues
        cues = reconciled.cues if reconciled else []
        out["clips"][rc.id] = {
            "seconds": round(clip.duration_s, 2), "transcript": bool(rc.transcript),
            "speech_detected": bool(res and res.speech_found),
            "speech_found": bool(reconciled and reconciled.speech_found),
            "speech_source": getattr(reconciled, "speech_source", None),
            "auditory_cues": len(cues), "verbal_cues": len(verbal),
            "unresolved_opposites": len(unresolved_opposites(cues)) + len(unresolved_opposites(verbal)),
            "summary": reconciled.summary if reconciled else "no audio track",
            # the transcripts are research-only text: the quote cue is kept out of the committed JSON
            "cue_texts": [f"{c.text} [{c.start}-{c.end}] {c.strength}" for c in cues]
            + [c.text for c in verbal if not c.text.startswith("says:")],
        }
    for cid, row in out["clips"].items():
        print(f"{cid:22s} transcript={row['transcript']!s:5s} detected={row['speech_detected']!s:5s} "
              f"speech={row['speech_found']!s:5s} auditory={row['auditory_cues']:2d} verbal={row['verbal_cues']:2d} "
              f"unresolved={row['unresolved_opposites']}")
    return out


def main() -> None:
    args = real_clips.parse_args("report cues", "perception_audio_real_clips", real_clip_cues)
    if args is None:
        return

    t = time.perf_counter()
    p = AudioPerceiver(LiteSettings())
    load_s = round(time.perf_counter() - t, 3)
    with tempfile.TemporaryDirectory() as d:
        x = ten_second_clip(Path(d))
    out: dict[str, object] = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "runs": args.runs,
        "perceiver_load_s": load_s,
        "clip_10s": stages(p, x, args.runs),
        "verbal_ms": median_ms(lambda: verbal_cues(media.SENTENCE), args.runs),
    }
    sample = media.SAMPLES / "sample_00000007.wav"
    if sample.is_file():
        y, sr = sf.read(sample, dtype="float32")
        res = p.perceive(y, sr)
        out["sample_00000007"] = {
            "seconds": round(len(y) / sr, 2),
            "perceive_wall_ms": median_ms(lambda: p.perceive(y, sr), args.runs),
            "perceive_cpu_ms": LAST_CPU[-1],
            "summary": res.summary,
            "cues": [c.to_dict() for c in res.cues],
        }
    print(json.dumps(out, indent=2))
    dest = ROOT / "bench" / "results" / "perception_audio.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Latency and CPU time of the ASR stage (faster-whisper + Whisper base) against clip length, int8 against
float32, beam 1 against 5, and VAD-chunk batching (BatchedInferencePipeline) on a long clip.

Clips are espeak-ng English sentences with short pauses, cut to each length; a Mandarin clip (transcribe +
translate passes); and each shared sample clip (`--samples`, default the checkout's sibling shared/samples) when
present. A shared sample's row keeps no text: its language, the language probability, segment count and timings
only (its licence forbids copying what is said). CPU time is the process's (CTranslate2 runs its threads
in-process), so on a shared machine it is closer than wall time to what an idle one would show.
Writes bench/results/asr.json.

    .venv/bin/python bench/asr.py [--runs 2] [--lengths 2.5,5,10,20,30] [--samples DIR]
"""

from __future__ import annotations

import argparse
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

from engines.perception.asr import Recognizer  # noqa: E402
from xemo.settings import AsrSettings  # noqa: E402

# Distinct sentences, so a long clip does not repeat itself (repeated text compresses well, and Whisper then
# re-decodes at higher temperatures: a cost real speech rarely pays).
SENTENCES = [
    "The weather was lovely this morning, so we walked to the park.",
    "I have never been so angry in my whole life.",
    "Please tell me what happened before you left the house.",
    "She was very happy to see her family again after the long trip.",
    "Our train was late, and nobody told us why it had stopped.",
    "He keeps his old bicycle in the garden behind the kitchen.",
    "We should finish the report before the meeting on Friday.",
    "My brother bought a small boat and painted it bright blue.",
    "The children laughed when the dog jumped into the lake.",
    "I think the restaurant on the corner closes at ten tonight.",
    "Could you bring some bread and cheese when you come over?",
    "The library was quiet except for the sound of the rain.",
    "They moved to a new city because of her job at the hospital.",
    "Turn left at the bridge and the museum is on your right.",
    "I forgot my umbrella, so I was soaked by the time I got home.",
    "The old teacher told us stories about the war every winter.",
]
MANDARIN = ("wo3 jue2 de2 zhe4 jian4 shi4 qing2 fei1 chang2 zhong4 yao4, ni3 ming2 tian1 yi2 ding4 yao4 lai2 zhao3 "
            "wo3, wo3 men2 yi4 qi3 qu4 chi1 fan4.")
SR = 16000


def speech_track(tmp: Path, seconds: float) -> np.ndarray:
    parts = []
    for i, s in enumerate(SENTENCES):
        x, _ = sf.read(media.speech(tmp / f"s{i}.wav", s), dtype="float32")
        parts += [x, np.zeros(SR // 2, np.float32)]
    one = np.concatenate(parts)
    reps = int(np.ceil(seconds * SR / len(one)))
    return np.tile(one, reps)[: int(seconds * SR)]


def measure(rec: Recognizer, audio: np.ndarray, runs: int, keep_text: bool = True) -> dict:
    rec.transcribe(audio, SR)  # warm-up
    wall, cpu = [], []
    res = None
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        res = rec.transcribe(audio, SR)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    seconds = len(audio) / SR
    w = statistics.median(wall)
    row = {"audio_s": round(seconds, 2), "wall_s": round(w, 3), "cpu_s": round(statistics.median(cpu), 3),
           "rtf": round(w / seconds, 3), "language": res.transcript.language if res else None,
           "language_probability": round(res.language_probability, 3) if res else None,
           "segments": len(res.transcript.segments) if res else 0,
           "translated": bool(res and res.transcript.english)}
    if keep_text:
        row["text"] = res.transcript.text[:120] if res else None
        row["english"] = (res.transcript.english or "")[:120] if res else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--lengths", default="2.5,5,10,20,30")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "asr.json")
    ap.add_argument("--samples", type=Path, default=media.SAMPLES, help="Folder of shared sample clips (*.mp4).")
    args = ap.parse_args()
    lengths = [float(x) for x in args.lengths.split(",")]
    load_before = os.getloadavg()[0]
    out: dict = {"host": platform.node(), "cpus": os.cpu_count(), "load_avg_1m_start": round(load_before, 2),
                 "runs": args.runs, "note": "shared 2-core VM, loaded by other work while this ran (run under nice -n "
                 "5; load averages at start and end below): compare ratios within this file, not absolute times",
                 "configs": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        longest = speech_track(tmp, max(max(lengths), 60.0))
        zh, _ = sf.read(media.speech(tmp / "zh.wav", MANDARIN, speed=140, voice="cmn-latn-pinyin"), dtype="float32")
        samples: dict[str, np.ndarray] = {}
        if args.samples.is_dir():
            from engines.ingest import ingest
            from xemo.settings import IngestSettings

            for mp4 in sorted(args.samples.glob("*.mp4")):
                samples[mp4.stem] = ingest(mp4, None, IngestSettings()).audio
        for compute_type in ("int8", "float32"):
            for beam in (1, 5):
                key = f"{compute_type}_beam{beam}"
                t = time.perf_counter()
                rec = Recognizer(AsrSettings(compute_type=compute_type, beam_size=beam))
                cfg: dict = {"load_s": round(time.perf_counter() - t, 2), "english": []}
                for sec in lengths:
                    cfg["english"].append(measure(rec, longest[: int(sec * SR)], args.runs))
                    print(key, cfg["english"][-1]["audio_s"], "s ->", cfg["english"][-1]["wall_s"], "s wall",
                          cfg["english"][-1]["cpu_s"], "s cpu", flush=True)
                cfg["mandarin_transcribe_translate"] = measure(rec, zh, args.runs)
                for name, audio in samples.items():
                    cfg[name] = measure(rec, audio, args.runs, keep_text=False)
                out["configs"][key] = cfg
                del rec
        # VAD-chunk batching on a 60 s clip (two or more 30 s chunks), int8 beam 5, budget raised to 60 s.
        batching = {}
        for bs in (1, 4):
            rec = Recognizer(AsrSettings(max_audio_s=60.0, batch_size=bs))
            batching[f"batch_size_{bs}"] = measure(rec, longest[: 60 * SR], args.runs)
            print("batch", bs, batching[f"batch_size_{bs}"]["wall_s"], flush=True)
            del rec
        out["vad_chunk_batching_60s"] = batching
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    out["samples"] = sorted(samples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(f"\n{'config':<14} {'audio s':>8} {'wall s':>8} {'cpu s':>8} {'rtf':>6}")
    for key, cfg in out["configs"].items():
        for row in cfg["english"]:
            print(f"{key:<14} {row['audio_s']:>8} {row['wall_s']:>8} {row['cpu_s']:>8} {row['rtf']:>6}")
        for name in ("mandarin_transcribe_translate", *sorted(samples)):
            row = cfg[name]
            print(f"{key:<14} {row['audio_s']:>8} {row['wall_s']:>8} {row['cpu_s']:>8} {row['rtf']:>6}  {name} "
                  f"{row['language']} p={row['language_probability']}")
    print("wrote", args.out)


if __name__ == "__main__":
    main()

"""Latency of the lite visual front end: face mesh per frame, FER (ONNX Runtime vs torch), whole perceive().

Uses the astronaut face clip (made by ffmpeg) and, if present, the shared sample; 16 uniform frames (the paper's
sampling) and a 4 fps timeline. Prints medians over runs after a warm-up and writes
bench/results/perception_visual.json.

`--real-clips` instead counts what perception reports on the real clips (the shared sample and the dev clips,
ingested and thinned like a lite request): visual cues per clip, unresolved opposite pairs, face found. It writes
bench/results/perception_visual_real_clips.json.

    .venv/bin/python bench/perception_visual.py [--runs 7] [--real-clips [--samples DIR]]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import media  # noqa: E402
import real_clips  # noqa: E402

from engines.perception.opposites import unresolved_opposites  # noqa: E402
from engines.perception.visual import VisualPerceiver  # noqa: E402
from engines.perception.visual.fer import FerClassifier, face_crops  # noqa: E402
from xemo.settings import LiteSettings  # noqa: E402


def decode(path: Path, n: int | None = None, fps: float | None = None) -> tuple[np.ndarray, list[float]]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fr, ts = [], []
        for f in c.decode(s):
            fr.append(f.to_ndarray(format="rgb24"))
            ts.append(float(f.pts * s.time_base))
    if n is not None:
        idx = np.linspace(0, len(fr) - 1, n).round().astype(int)
    else:
        step = max(1, round((len(ts) / max(ts[-1], 1e-6)) / (fps or 4.0)))
        idx = np.arange(0, len(fr), step)
    return np.stack([fr[i] for i in idx]), [ts[i] for i in idx]


def median_ms(fn, runs: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(out), 2)


def real_clip_cues(root: Path) -> dict:
    """Visual cues per real clip, as the lite pipeline's visual stage reports them."""
    lite = LiteSettings()
    p = VisualPerceiver(lite)
    out: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "clips": {}}
    try:
        for rc, clip in real_clips.clips(root):
            row: dict = {"seconds": round(clip.duration_s, 2)}
            # the timeline is what the lite pipeline perceives; 16 uniform frames is the paper's sampling
            for name, s in (("timeline", lite), ("uniform_16", lite.model_copy(update={"use_timeline": False}))):
                frames, times = real_clips.perceived_frames(clip, s)
                if frames is None or not len(frames):
                    continue
                res = p.perceive(frames, times)
                row[name] = {"frames": len(frames), "face_found": res.face_found, "cues": len(res.cues),
                             "unresolved_opposites": len(unresolved_opposites(res.cues)), "summary": res.summary,
                             "cue_texts": [f"{c.text} [{c.start}-{c.end}] {c.strength}" for c in res.cues]}
            out["clips"][rc.id] = row
    finally:
        p.close()
    for cid, row in out["clips"].items():
        print(f"{cid:22s} {row['seconds']:5.1f}s " + " ".join(
            f"{k}: face={v['face_found']!s:5s} cues={v['cues']:2d} unresolved={v['unresolved_opposites']}"
            for k, v in row.items() if isinstance(v, dict)))
    return out


def main() -> None:
    args = real_clips.parse_args("count cues", "perception_visual_real_clips", real_clip_cues)
    if args is None:
        return
    results: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                     "load_avg_1m_before": round(os.getloadavg()[0], 2), "runs": args.runs, "clips": {}}
    with tempfile.TemporaryDirectory() as d:
        cache = Path(d) / "cache"
        t = time.perf_counter()
        p = VisualPerceiver(LiteSettings(cache_dir=cache))
        results["load_s_first_export"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        VisualPerceiver(LiteSettings(cache_dir=cache)).close()
        results["load_s_cached"] = round(time.perf_counter() - t, 3)
        torch_fer = FerClassifier(runtime="torch")
        clips = {"astronaut_512": media.face_clip(Path(d) / "face.mp4", media.face_image(Path(d) / "face.png"),
                                                  seconds=10.0)}
        sample = media.SAMPLES / "sample_00000007.mp4"
        if sample.is_file():
            clips["shared_sample"] = sample
        for name, path in clips.items():
            row = {}
            for label, (frames, times) in {"16_frames": decode(path, n=16),
                                           "timeline_4fps": decode(path, fps=4.0)}.items():
                faces = p.mesher.detect(frames)
                boxes = [f.box for f in faces if f.box is not None]
                crops = face_crops([fr for fr, f in zip(frames, faces, strict=True) if f.box is not None], boxes)
                assert p.fer is not None
                row[label] = {
                    "frames": len(frames), "size": f"{frames.shape[2]}x{frames.shape[1]}",
                    "perceive_ms": median_ms(lambda f=frames, t=times: p.perceive(f, t), args.runs),
                    "mesh_ms_per_frame": round(median_ms(lambda f=frames: p.mesher.detect(f), args.runs)
                                               / len(frames), 2),
                    "fer_onnx_ms": median_ms(lambda c=crops: p.fer.predict(c), args.runs),
                    "fer_torch_ms": median_ms(lambda c=crops: torch_fer.predict(c), args.runs),
                    "cues": [c.text for c in p.perceive(frames, times).cues],
                }
            results["clips"][name] = row
        p.close()
    # other jobs on a shared machine inflate every number: record how busy it was
    results["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    out = ROOT / "bench" / "results" / "perception_visual.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""The real clips the perception benches read: the shared sample and the dev clips, ingested like a request.

They live outside the repository (research-only licence) under ../shared/samples (or the folder given with
`--samples`); `clips()` yields nothing when that folder is absent, so the benches skip cleanly on a fresh clone.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.ingest import ingest
from engines.types import Clip
from xemo.settings import IngestSettings, LiteSettings

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(what: str, name: str, real_clip_run: Callable[[Path], dict]) -> argparse.Namespace | None:
    """A perception bench's options (`--runs`, `--real-clips`, `--samples`). With `--real-clips`, runs
    `real_clip_run` on the samples folder, saves its result as bench/results/NAME.json and returns None."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--real-clips", action="store_true", help=f"{what} on the real clips instead of timing")
    ap.add_argument("--samples", type=Path, default=SAMPLES, help="folder of the shared samples")
    args = ap.parse_args()
    if not args.real_clips:
        return args
    save(name, real_clip_run(args.samples))
    return None


def save(name: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


@dataclass
class RealClip:
    id: str
    path: Path
    transcript: str | None


def listing(root: Path = SAMPLES) -> list[RealClip]:
    out: list[RealClip] = []
    sample = root / "sample_00000007.mp4"
    if sample.is_file():
        meta = json.loads((root / "sample_00000007.json").read_text())
        out.append(RealClip("sample_00000007", sample, meta.get("subtitle")))
    manifest = root / "dev" / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out.append(RealClip(row["id"], root / "dev" / row["video"], row.get("transcript")))
    return out


def clips(root: Path = SAMPLES, settings: IngestSettings | None = None) -> Iterator[tuple[RealClip, Clip]]:
    for rc in listing(root):
        yield rc, ingest(rc.path, None, settings or IngestSettings())


def perceived_frames(clip: Clip, lite: LiteSettings) -> tuple[np.ndarray | None, list[float]]:
    """The frames the lite pipeline's visual stage sees: the timeline, thinned evenly to max_timeline_frames."""
    frames, times = clip.frames, clip.frame_times
    if lite.use_timeline and clip.timeline is not None and len(clip.timeline) > 0:
        frames, times = clip.timeline, clip.timeline_times
        if len(frames) > lite.max_timeline_frames:
            keep = np.linspace(0, len(frames) - 1, lite.max_timeline_frames).round().astype(int)
            frames, times = frames[keep], [times[i] for i in keep]
    return frames, times

"""The data directory of `xemo data build`, read by every training stage.

DATA/manifest.json   what was built from what (CSV hash, clips, bad clips, labels, split sizes)
DATA/samples.jsonl   one clip per line: split, emotion, subtitle, the description (stage-3 target), the short
                     visual / auditory captions (stages 1-2), reference cues (EmoCue-360) and weak cues
DATA/media/ID.npz    what ingest decoded: `frames` (16, H, W, 3) uint8 + `frame_times`, `audio` 16 kHz float32
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.errors import BadRequest
from train.checkpoint import sha256_file

MANIFEST, SAMPLES, MEDIA = "manifest.json", "samples.jsonl", "media"
STAGES = ("stage1", "stage2", "stage3")
SPLITS = ("train", "validation")


class DataError(BadRequest):
    type = "bad_data"


@dataclass
class Sample:
    id: str
    split: str
    emotion: str
    subtitle: str
    target: str  # the description: the stage-3 instruction target
    visual_caption: str | None
    audio_caption: str | None
    has_video: bool
    has_audio: bool
    ref_cues: dict[str, list[str]] = field(default_factory=dict)
    weak_cues: list[dict[str, Any]] = field(default_factory=list)
    group: str = ""  # the source video: all its clips are on one side of the split
    caption_source: dict[str, str | None] = field(default_factory=dict)  # description | weak | None
    media: Path = Path()

    def usable(self, stage: str) -> bool:
        if stage == "stage1":
            return self.has_video and bool(self.visual_caption)
        if stage == "stage2":
            return self.has_audio and bool(self.audio_caption)
        return (self.has_video or self.has_audio) and bool(self.target)

    def load(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(frames uint8 (T, H, W, 3) or None, audio float32 16 kHz or None)."""
        with np.load(self.media, allow_pickle=False) as z:
            frames = z["frames"] if "frames" in z.files else None
            audio = z["audio"] if "audio" in z.files else None
        return frames, audio


def read_data(data_dir: Path) -> tuple[dict[str, Any], list[Sample]]:
    data_dir = Path(data_dir)
    mpath, spath = data_dir / MANIFEST, data_dir / SAMPLES
    if not mpath.is_file() or not spath.is_file():
        raise DataError(f"{data_dir} is not a data directory of `xemo data build` (no {MANIFEST} / {SAMPLES})")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{MANIFEST} is not valid JSON ({e.msg})") from None
    samples: list[Sample] = []
    for n, line in enumerate(spath.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            s = Sample(**{k: v for k, v in row.items() if k != "media"}, media=data_dir / MEDIA / f"{row['id']}.npz")
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise DataError(f"{SAMPLES} line {n}: not a sample row ({type(e).__name__}: {e})") from None
        if s.split not in SPLITS:
            raise DataError(f"{SAMPLES} line {n}: split must be one of {SPLITS}, not {s.split!r}")
        if not s.media.is_file():
            raise DataError(f"{SAMPLES} line {n}: media file {MEDIA}/{s.media.name} is missing")
        samples.append(s)
    return manifest, samples


def select(samples: list[Sample], stage: str, split: str) -> list[Sample]:
    return [s for s in samples if s.split == split and s.usable(stage)]


def data_hashes(data_dir: Path) -> dict[str, str]:
    """sha256 of the two index files (the manifest lists the sha256 of every media file)."""
    return {name: sha256_file(Path(data_dir) / name) for name in (MANIFEST, SAMPLES)}


class BatchOrder:
    """Which samples make up global batch `step`: consecutive slices of seeded per-epoch permutations.

    A pure function of (seed, step), so a resumed run and a run on N processes see the same global batches as
    one uninterrupted single-process run; process r takes slice r of each global batch.
    """

    def __init__(self, n: int, global_batch: int, seed: int) -> None:
        if n <= 0:
            raise DataError("no training samples for this stage")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g).tolist()}
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        start = step * self.global_batch
        return [self._perm(i // self.n)[i % self.n] for i in range(start, start + self.global_batch)]

"""`xemo data build`: a folder of clips + an EMER / MER-Caption style CSV -> the data directory of all stages.

Per clip: the hardened ingest (engines/ingest: sandboxed decoders, limits, timeouts) decodes the 16 frames and
the 16 kHz audio, stored under DATA/media; the lite profile's own perceivers measure visual and vocal cues with
timestamps (weak labels); the offline cue extractor of eval/ splits the description into visual / auditory /
emotional cues: the first few become the short captions of stages 1-2 (the weak cues stand in when the
description names none), all of them the EmoCue-360 reference; the description itself is the stage-3 target.
The train/validation split is drawn over source videos (a `video` column, else each clip is its own video),
so no video is on both sides. A clip that fails is listed in the manifest with the reason, not fatal.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import XemoError
from eval.emocue360 import keep_cue
from eval.labels import normalise_label
from train.checkpoint import sha256_file
from train.data import MANIFEST, MEDIA, SAMPLES, DataError, Sample
from xemo.settings import Settings

COLUMNS = {"names": ("names", "name"), "emotions": ("emotions", "emotion"), "subtitles": ("subtitles", "subtitle"),
           "reasons": ("reasons", "reason", "description")}
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".m4a")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
MAX_SUBTITLE_CHARS = 1000  # keeps the stage-3 prompt inside the context (the audio tokens fill the rest)
MAX_CAPTION_WORDS = 60  # CLIP's text tower reads 77 tokens


@dataclass
class Row:
    name: str
    emotion: str
    subtitle: str
    reason: str
    group: str
    split: str | None


@dataclass
class BuildReport:
    rows: int
    ok: int
    bad: list[dict[str, str]] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    out: str = ""


def read_csv(path: Path) -> list[Row]:
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = {h.strip().lower(): h for h in reader.fieldnames or []}
        cols = {}
        for key, names in COLUMNS.items():
            found = next((header[n] for n in names if n in header), None)
            if found is None:
                raise DataError(f"{path.name}: needs a {key!r} column (has: {', '.join(header) or 'none'})")
            cols[key] = found
        group_col = next((header[n] for n in ("video", "video_id") if n in header), None)
        split_col = header.get("split")
        rows = []
        for rec in reader:
            name = (rec.get(cols["names"]) or "").strip()
            split = (rec.get(split_col) or "").strip().lower() if split_col else ""
            rows.append(Row(name, (rec.get(cols["emotions"]) or "").strip(), (rec.get(cols["subtitles"]) or "").strip(),
                            " ".join((rec.get(cols["reasons"]) or "").split()),
                            ((rec.get(group_col) or "").strip() if group_col else "") or name,
                            {"val": "validation", "valid": "validation"}.get(split, split) or None))
    return rows


def assign_splits(groups: dict[str, str], val_fraction: float, seed: int,
                  explicit: dict[str, str | None] | None = None) -> dict[str, str]:
    """sample id -> train | validation, drawn over groups (a group's samples share a side).

    Groups are ordered by a seeded hash, the first round(val_fraction * n) go to validation (at least one when
    there are two or more groups and val_fraction > 0). An explicit split of any sample fixes its group's side.
    """
    explicit = explicit or {}
    fixed: dict[str, str] = {}
    for sid, g in groups.items():
        want = explicit.get(sid)
        if want is None:
            continue
        if want not in ("train", "validation"):
            raise DataError(f"sample {sid}: split must be train or validation, not {want!r}")
        if fixed.setdefault(g, want) != want:
            raise DataError(f"video {g!r} has samples on both sides of the split column")
    free = sorted({g for g in groups.values() if g not in fixed},
                  key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    n_val = round(val_fraction * len(free))
    if val_fraction > 0 and len(free) >= 2:
        n_val = min(max(1, n_val), len(free) - 1)
    side = {g: ("validation" if k < n_val else "train") for k, g in enumerate(free)} | fixed
    return {sid: side[g] for sid, g in groups.items()}


def find_media(clips: Path, name: str) -> tuple[Path | None, Path | None]:
    video = next((clips / (name + e) for e in VIDEO_EXTS if (clips / (name + e)).is_file()), None)
    audio = next((clips / (name + e) for e in AUDIO_EXTS if (clips / (name + e)).is_file()), None)
    return video, audio


def _caption(cues: list[str], n: int) -> str | None:
    words = " ".join(cues[:n]).split()
    return " ".join(words[:MAX_CAPTION_WORDS]) or None


class WeakLabeller:
    """The lite profile's perceivers (loaded once): measured cues with their time spans."""

    def __init__(self, settings: Settings) -> None:
        from engines.perception.audio import AudioPerceiver
        from engines.perception.visual import VisualPerceiver

        self.lite = settings.lite
        self.visual = VisualPerceiver(settings.lite)
        self.audio = AudioPerceiver(settings.lite)

    def __call__(self, clip: Any) -> list[dict[str, Any]]:
        cues = []
        frames, times = clip.frames, clip.frame_times
        if clip.timeline is not None and len(clip.timeline) > 0:
            frames, times = clip.timeline, clip.timeline_times
        if frames is not None and len(frames) > 0:
            if len(frames) > self.lite.max_timeline_frames:
                keep = np.linspace(0, len(frames) - 1, self.lite.max_timeline_frames).round().astype(int)
                frames, times = frames[keep], [times[i] for i in keep]
            cues += self.visual.perceive(np.ascontiguousarray(frames), list(times)).cues
        if clip.audio is not None and len(clip.audio) > 0:
            cues += self.audio.perceive(clip.audio, clip.sample_rate).cues
        return [{"modality": c.modality, "text": c.text, "start": c.start, "end": c.end,
                 "strength": round(float(c.strength), 3)} for c in cues]


def build(settings: Settings, clips: Path, csv_path: Path, out: Path, weak_labels: bool = True,
          on_clip: Callable[[str], None] | None = None) -> BuildReport:
    from engines.ingest import ingest
    from eval.embed import default_embedder
    from eval.extract_offline import OfflineExtractor

    clips, out = Path(clips), Path(out)
    if not clips.is_dir():
        raise DataError(f"clips directory not found: {clips}")
    rows = read_csv(csv_path)
    x, t = settings.xemogpt, settings.train
    # XEmoGPT's uniform frames, whichever frames the serving profile decodes
    ing = settings.ingest.model_copy(update={"num_frames": x.num_frames, "long_side": t.frame_long_side,
                                             "uniform_frames": True})
    (out / MEDIA).mkdir(parents=True, exist_ok=True)
    extractor = OfflineExtractor(default_embedder(settings.eval.embedder))
    weak = WeakLabeller(settings) if weak_labels else None
    report = BuildReport(rows=len(rows), ok=0, out=str(out))
    samples: list[Sample] = []
    explicit: dict[str, str | None] = {}
    media_sha: dict[str, str] = {}
    seen: set[str] = set()
    for row in rows:
        if on_clip is not None:
            on_clip(row.name)
        problem = _check_row(row, seen)
        video = audio = None
        if problem is None:
            video, audio = find_media(clips, row.name)
            if video is None and audio is None:
                problem = ("not_found", f"no clip named {row.name} with a known extension in the clips folder")
        if problem is None:
            try:
                clip = ingest(video if video is not None else audio, audio if video is not None else None, ing)
            except XemoError as e:
                problem = (e.type, e.message)
        if problem is not None:
            report.bad.append({"name": row.name, "type": problem[0], "message": problem[1]})
            continue
        seen.add(row.name)
        has_v = clip.frames is not None and len(clip.frames) > 0
        has_a = clip.audio is not None and len(clip.audio) > 0
        weak_cues = weak(clip) if weak is not None else []
        arrays: dict[str, np.ndarray] = {}
        if has_v:
            arrays["frames"] = np.ascontiguousarray(clip.frames)
            arrays["frame_times"] = np.asarray(clip.frame_times, np.float32)
        if has_a:
            arrays["audio"] = np.asarray(clip.audio[: int(x.max_audio_s * clip.sample_rate)], np.float32)
        media = out / MEDIA / f"{row.name}.npz"
        np.savez_compressed(media, **arrays)
        media_sha[row.name] = sha256_file(media)
        cues = extractor.extract(row.reason)
        captions, source = {}, {}
        for mod, key, ok in (("visual", "visual", has_v), ("auditory", "audio", has_a)):
            from_desc = _caption([c for c in cues[mod] if keep_cue(mod, c)], t.caption_max_cues)
            from_weak = _caption([c["text"] for c in weak_cues if c["modality"] == mod], t.caption_max_cues)
            captions[key] = (from_desc or from_weak) if ok else None
            source[key] = None if captions[key] is None else ("description" if from_desc else "weak")
        samples.append(Sample(
            id=row.name, split="train", emotion=normalise_label(row.emotion) or "", group=row.group,
            subtitle=row.subtitle[:MAX_SUBTITLE_CHARS], target=row.reason, visual_caption=captions["visual"],
            audio_caption=captions["audio"], has_video=has_v, has_audio=has_a, ref_cues=cues, weak_cues=weak_cues,
            caption_source=source))
        explicit[row.name] = row.split
        report.ok += 1
    splits = assign_splits({s.id: s.group for s in samples}, t.val_fraction, t.seed, explicit)
    for s in samples:
        s.split = splits[s.id]
    report.splits = {k: sum(1 for s in samples if s.split == k) for k in ("train", "validation")}
    with (out / SAMPLES).open("w", encoding="utf-8") as f:
        for s in samples:
            row = asdict(s)
            row.pop("media")
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    manifest = {
        "version": 1, "csv": {"name": Path(csv_path).name, "sha256": sha256_file(Path(csv_path))},
        "clips": str(clips.resolve()), "rows": report.rows, "ok": report.ok, "bad": report.bad,
        "splits": report.splits, "labels": sorted({s.emotion for s in samples if s.emotion}),
        "extractor": extractor.name, "weak_labels": "lite perception" if weak_labels else None,
        "num_frames": x.num_frames, "frame_long_side": t.frame_long_side, "max_audio_s": x.max_audio_s,
        "media_sha256": media_sha,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _check_row(row: Row, seen: set[str]) -> tuple[str, str] | None:
    if not _SAFE_NAME.match(row.name):
        return ("bad_name", "clip names may only hold letters, digits, '_', '-' and '.' (no paths)")
    if row.name in seen:
        return ("duplicate", "the CSV names this clip twice; the first row was used")
    if not row.reason:
        return ("no_description", "the row has no description (reasons column)")
    return None

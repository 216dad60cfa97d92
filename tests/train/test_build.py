"""`xemo data build`: clips + an EMER-style CSV -> captions, targets, weak cues, media, a split by video."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from train.build import assign_splits
from train.data import read_data, select
from xemo.settings import Settings


def test_every_toy_clip_is_built_with_captions_targets_and_weak_cues(toy_data: tuple[Path, Any]) -> None:
    data, report = toy_data
    assert report.ok == 8 and report.bad == [] and report.splits == {"train": 4, "validation": 4}
    manifest, samples = read_data(data)
    assert manifest["labels"] == ["angry", "happy", "neutral", "sad"] and len(manifest["media_sha256"]) == 8
    bars = next(s for s in samples if s.id == "bars_0")
    # short captions are the description's own cues, split by modality (offline extractor of eval/)
    assert "colour bars" in bars.visual_caption and "smiles" in bars.visual_caption
    assert "voice" in bars.audio_caption and "smiles" not in bars.audio_caption
    assert bars.caption_source == {"visual": "description", "audio": "description"}
    assert bars.target.startswith("In the video, bright colour bars") and bars.emotion == "happy"
    assert bars.ref_cues["visual"] and bars.ref_cues["emotional"]
    # the lite profile's measured cues, with their time spans, as weak labels
    weak = [c for s in samples for c in s.weak_cues]
    assert weak and all(c["modality"] in ("visual", "auditory") for c in weak)
    assert any(c["start"] is not None and c["end"] is not None and c["end"] >= c["start"] for c in weak)
    frames, audio = bars.load()
    assert frames.shape[0] == 16 and frames.dtype == np.uint8 and max(frames.shape[1:3]) <= 448
    assert audio.dtype == np.float32 and 1.0 < len(audio) / 16000 <= 12.0
    assert len(select(samples, "stage1", "validation")) == 4


def test_the_split_keeps_each_video_on_one_side() -> None:
    groups = {f"v{g}_c{c}": f"v{g}" for g in range(20) for c in range(3)}
    split = assign_splits(groups, 0.25, seed=0)
    for g in {v for v in groups.values()}:
        assert len({split[s] for s, gg in groups.items() if gg == g}) == 1
    n_val = sum(1 for v in split.values() if v == "validation")
    assert n_val == 15  # 5 of 20 videos, 3 clips each
    assert assign_splits(groups, 0.25, seed=0) == split and assign_splits(groups, 0.25, seed=1) != split
    # an explicit split fixes the whole video; conflicting explicit splits are refused
    fixed = assign_splits(groups, 0.25, 0, {"v3_c0": "validation"})
    assert {fixed["v3_c1"], fixed["v3_c2"]} == {"validation"}
    from train.data import DataError

    with pytest.raises(DataError, match="both sides"):
        assign_splits(groups, 0.25, 0, {"v3_c0": "validation", "v3_c1": "train"})


def test_bad_clips_are_listed_not_fatal(tmp_path: Path, toy_clips: tuple[Path, Path], tiny_train: dict[str, Any],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from xemo.cli import app

    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "good.mp4").write_bytes((toy_clips[0] / "bars_0.mp4").read_bytes())
    (clips / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 2000)
    rows = [("good", "happy", "hi", "In the video, he smiles broadly. In the audio, his voice is high."),
            ("broken", "sad", "", "In the video, she cries."), ("absent", "sad", "", "In the video, she cries."),
            ("../etc/passwd", "sad", "", "In the video, she cries."), ("good", "happy", "", "A second row.")]
    csv_path = tmp_path / "emer.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["names", "emotions", "subtitles", "reasons"])
        w.writerows(rows)
    out = tmp_path / "data"
    monkeypatch.delenv("XEMO_CONFIG", raising=False)
    res = CliRunner().invoke(app, ["--config", str(tiny_train["train_config"]), "data", "build", "--clips",
                                   str(clips), "--csv", str(csv_path), "--out", str(out), "--no-weak-labels"])
    assert res.exit_code == 1, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    bad = {b["name"]: b["type"] for b in manifest["bad"]}
    assert manifest["ok"] == 1 and set(bad) == {"broken", "absent", "../etc/passwd", "good"}
    assert bad["absent"] == "not_found" and bad["../etc/passwd"] == "bad_name" and bad["good"] == "duplicate"
    assert bad["broken"] not in ("not_found", "bad_name")  # ingest's own reason (corrupt / unsupported media)
    _, samples = read_data(out)
    assert [s.id for s in samples] == ["good"] and samples[0].weak_cues == []


def test_a_csv_without_the_emer_columns_is_refused(tmp_path: Path, train_settings: Settings) -> None:
    from train.build import build
    from train.data import DataError

    p = tmp_path / "x.csv"
    p.write_text("file,label\na,happy\n")
    with pytest.raises(DataError, match="'names' column"):
        build(train_settings, tmp_path, p, tmp_path / "out")

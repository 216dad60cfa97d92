"""`xemo eval score` and `xemo eval extract` as a user runs them (subprocess, real MiniLM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.embed import CachedEmbedder
from eval.emocue360 import format_table, score

REPO = Path(__file__).resolve().parents[2]
REF = {
    "a": {
        "visual": ["She smiles.", "She nods."],
        "auditory": ["Her voice is loud.", "Subtitle text: 'Hi.'"],
        "emotional": ["She is happy."],
    },
    "b": {"visual": ["He frowns."], "auditory": ["He shouts."], "emotional": ["He is angry."]},
}
PRED = {
    "a": {"visual": ["She is smiling.", "She is smiling."], "auditory": ["A loud voice."], "emotional": ["Happy."]},
}


def xemo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xemo.cli", "eval", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "pred.json").write_text(json.dumps(PRED))
    (tmp_path / "ref.json").write_text(json.dumps(REF))
    return tmp_path / "pred.json", tmp_path / "ref.json"


def test_score_json_matches_the_library(files: tuple[Path, Path], minilm: CachedEmbedder) -> None:
    pred, ref = files
    r = xemo("score", "--pred", str(pred), "--ref", str(ref), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    lib = score(PRED, REF, minilm).to_dict()
    for cat in ("visual", "auditory", "emotional"):
        for k in ("precision", "recall", "f1"):
            assert out[cat][k] == pytest.approx(lib[cat][k], abs=1e-5)
    assert out["coverage"]["missing"] == ["b"] and out["coverage"]["coverage"] == 0.5


def test_score_table(minilm: CachedEmbedder) -> None:
    table = format_table(score(PRED, REF, minilm, "one-to-one", 0.6))
    assert "one-to-one, threshold 0.6" in table and "missing predictions (1): b" in table
    assert "coverage: 1/2 reference samples predicted (50.0%)" in table


def test_score_bad_input_exits_2(files: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = files
    assert xemo("score", "--pred", str(pred), "--ref", str(ref), "--matching", "greedy").returncode == 2
    r = xemo("score", "--pred", str(tmp_path / "nope.json"), "--ref", str(ref))
    assert r.returncode == 2 and "not found" in r.stderr
    (tmp_path / "bad.json").write_text('{"a": {"visual": "x", "auditory": [1]}}')
    r = xemo("score", "--pred", str(tmp_path / "bad.json"), "--ref", str(ref))
    assert r.returncode == 2 and "list of strings" in r.stderr and "Traceback" not in r.stderr


def test_extract_offline_writes_the_released_layout(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        json.dumps(
            {
                "id": "x",
                "description": "In the video, he frowns. In the audio, his voice is sharp and "
                'loud. The subtitle says, "Go away." He seems annoyed.',
            }
        )
        + "\n"
        + json.dumps({"name": "y", "english": "She smiles warmly. Her voice is soft. She feels content."})
        + "\n"
    )
    out = tmp_path / "cues.json"
    r = xemo("extract", str(inp), "--out", str(out))
    assert r.returncode == 0, r.stderr
    cues = json.loads(out.read_text())
    assert set(cues) == {"x", "y"}
    assert all(set(v) == {"visual", "auditory", "emotional"} for v in cues.values())
    assert "Subtitle text: 'Go away.'" in cues["x"]["auditory"]
    inp.write_text('{"id": "x"}\n')
    assert xemo("extract", str(inp), "--out", str(out)).returncode == 2

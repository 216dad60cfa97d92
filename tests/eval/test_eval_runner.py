"""`xemo eval run`: generated clips through the real lite pipeline in process (with resume), and through a real
`xemo serve` over HTTP; plus the manifest checks and the CLI's exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import start_server

from eval.analyzers import InProcessAnalyzer
from eval.embed import CachedEmbedder
from eval.manifest import ManifestError, ManifestRow, read_manifest
from eval.runner import RESULTS, run_benchmark
from xemo.settings import Settings

REPO = Path(__file__).resolve().parents[2]
HAPPY_REF = (
    "In the video, an astronaut in a white suit smiles broadly, the corners of his mouth turned up. In the audio, "
    'his voice is steady and clear. The subtitle says, "I cannot believe you did this again." Overall he seems '
    "pleased and relaxed."
)
SUMMARY_KEYS = {"emocue360", "label", "latency", "model"}


def quick_settings() -> Settings:
    return Settings(generation={"max_tokens": 24})  # a short explanation keeps the test fast


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, face_mp4: Path, testsrc_mp4: Path) -> Path:
    d = tmp_path_factory.mktemp("bench")
    for src in (face_mp4, testsrc_mp4):
        (d / src.name).write_bytes(src.read_bytes())
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return d


class CountingAnalyzer(InProcessAnalyzer):
    """The real in-process analyzer, counting the clips it is asked to analyse (to check resume)."""

    calls: list[str] = []

    async def analyze(self, row: ManifestRow) -> dict[str, Any]:
        self.calls.append(row.id)
        return await super().analyze(row)


def test_in_process_run_and_resume(clips: Path, minilm: CachedEmbedder, tmp_path: Path) -> None:
    manifest = write_manifest(
        clips / "manifest.jsonl",
        [
            {
                "id": "face",
                "video": "face.mp4",
                "transcript": "I cannot believe you did this again.",
                "reference_description": HAPPY_REF,
                "reference_label": "Happiness",
            },
            {
                "id": "pattern",
                "video": "testsrc.mp4",
                "reference_label": "neutral",
                "reference_cues": {
                    "visual": ["A colourful test pattern fills the screen."],
                    "auditory": ["A synthetic voice speaks at a steady pace."],
                    "emotional": [],
                },
            },
            {"id": "broken", "video": "broken.mp4", "reference_label": "sad"},
        ],
    )
    out = tmp_path / "run"
    settings = quick_settings()
    an = CountingAnalyzer(settings)
    CountingAnalyzer.calls = []
    res = run_benchmark(settings, manifest, out, analyzer=an, embedder=minilm, show_progress=False)

    recs = [json.loads(x) for x in (out / RESULTS).read_text().splitlines()]
    assert [r["id"] for r in recs] == ["face", "pattern", "broken"]
    assert [r["status"] for r in recs] == ["ok", "ok", "error"]
    assert recs[2]["error"]["type"] in ("corrupt_media", "unsupported_format", "bad_media", "no_streams")
    face = recs[0]
    assert face["answer"]["emotion"]["label"] and face["answer"]["explanation"]
    assert face["cues"]["reference_source"] == "extracted" and recs[1]["cues"]["reference_source"] == "manifest"
    assert any("Subtitle text:" in c for c in face["cues"]["reference"]["auditory"])
    assert face["cues"]["extract_s"] > 0 and face["emocue360"]["visual"] is not None

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert set(summary["label"]) == {"accuracy", "uar", "war", "n"} and summary["label"]["n"] == 2
    for cat in ("visual", "auditory", "emotional"):
        assert set(summary["emocue360"][cat]) == {"precision", "recall", "f1"}
    assert 0.0 <= summary["emocue360"]["visual"]["f1"] <= 1.0
    assert summary["emocue360"]["emotional"]["f1"] is not None  # only "face" has emotional reference cues
    assert summary["latency"]["n"] == 2 and summary["latency"]["e2e_s"]["p50"] > 0
    assert summary["model"] and "SmolLM2" in summary["model"]
    details = json.loads((out / "run.json").read_text())
    assert details["n_failed"] == 1 and details["failed"][0]["id"] == "broken"
    assert details["emocue360"]["coverage"]["missing"] == []  # "broken" has no reference cues to miss
    report = (out / "report.md").read_text()
    assert "EmoCue-360" in report and "| face | ok |" in report and "broken" in report
    for png in ("emocue360_prf.png", "label_confusion.png", "latency_hist.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert res.summary == summary
    assert sorted(CountingAnalyzer.calls) == ["broken", "face", "pattern"]

    # Resume: a torn line from a crash is ignored, ok clips are not analysed again, the failed one is retried.
    with (out / RESULTS).open("a") as f:
        f.write('{"id": "face", "status": "ok", "answ')
    CountingAnalyzer.calls = []
    try:
        run_benchmark(settings, manifest, out, analyzer=an, embedder=minilm, show_progress=False)
    finally:
        asyncio.run(an.close())
    assert CountingAnalyzer.calls == ["broken"]
    recs2 = [json.loads(x) for x in (out / RESULTS).read_text().splitlines()]
    assert recs2[0]["answer"]["id"] == face["answer"]["id"]  # the same answer, kept
    assert json.loads((out / "summary.json").read_text())["emocue360"] == summary["emocue360"]


def test_manifest_errors_name_the_line(tmp_path: Path) -> None:
    cases = {
        "not json": "line 1: not valid JSON",
        json.dumps({"video": "a.mp4"}): "'id'",
        json.dumps({"id": "a"}): "'video' is required",
        json.dumps({"id": "a", "video": "a.mp4", "colour": 1}): "unknown field",
        json.dumps({"id": "a", "video": "a.mp4", "reference_cues": {"visual": "x", "auditory": [3]}}): "list of str",
        json.dumps({"id": "a", "video": "a.mp4"}) + "\n" + json.dumps({"id": "a", "video": "b.mp4"}): "duplicate",
    }
    for text, msg in cases.items():
        p = tmp_path / "m.jsonl"
        p.write_text(text + "\n")
        with pytest.raises(ManifestError, match=msg):
            read_manifest(p)
    p.write_text(json.dumps({"id": 7, "video": "v/a.mp4", "audio": "a.wav"}) + "\n")
    (row,) = read_manifest(p)
    assert row.id == "7" and row.video == tmp_path / "v" / "a.mp4" and row.audio == tmp_path / "a.wav"


def test_cli_bad_manifest_exits_2(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_text("{}\n")
    r = subprocess.run(
        [sys.executable, "-m", "xemo.cli", "eval", "run", str(p), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def xemo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    srv = start_server(tmp_path_factory, "eval", {"XEMO_GENERATION__MAX_TOKENS": "24"})
    yield srv.url
    srv.stop()


def test_run_against_a_real_server(
    clips: Path, xemo_server: str, minilm: CachedEmbedder, tmp_path: Path, speech_wav: Path
) -> None:
    (clips / "speech.wav").write_bytes(speech_wav.read_bytes())
    manifest = write_manifest(
        clips / "served.jsonl",
        [
            {"id": "face", "video": "face.mp4", "reference_description": HAPPY_REF, "reference_label": "happy"},
            {
                "id": "pattern",
                "video": "testsrc.mp4",
                "audio": "speech.wav",
                "transcript": "Fine.",
                "reference_description": "In the video, a test pattern is shown. In the audio, a flat voice speaks.",
                "reference_label": "neutral",
            },
        ],
    )
    out = tmp_path / "served"
    res = run_benchmark(
        Settings(), manifest, out, server=xemo_server, concurrency=2, embedder=minilm, show_progress=False
    )
    recs = [json.loads(x) for x in (out / RESULTS).read_text().splitlines()]
    assert [r["status"] for r in recs] == ["ok", "ok"], recs
    assert all(r["answer"]["emotion"]["label"] for r in recs)
    assert set(res.summary) == SUMMARY_KEYS and res.summary["label"]["n"] == 2
    assert res.summary["model"]
    assert res.details["server"] == xemo_server and (out / "report.md").is_file()

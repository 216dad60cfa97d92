"""CLI habits: global options (`--config` first of all) before or after the subcommand; `xemo analyze` on a
directory or glob (JSONL, one line per clip) and on a transcript alone; `--asr`; shell completion is offered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from xemo.cli import app, hoist_global_options

ROOT = Path(__file__).resolve().parents[2]


def xemo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XEMO_")}
    return subprocess.run([sys.executable, "-m", "xemo.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "c.yaml"
    p.write_text("log_level: DEBUG\nserver: {port: 9123}\n")
    return p


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "{c}", "config", "--json"],
        ["config", "--json", "--config", "{c}"],
        ["config", "--config={c}", "--json"],
        ["-c", "{c}", "config", "--json"],
        ["config", "--json", "-c", "{c}"],
    ],
)
def test_config_works_before_and_after_the_subcommand(config: Path, args: list[str]) -> None:
    r = xemo(*(a.replace("{c}", str(config)) for a in args))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["log_level"] == "DEBUG" and data["server"]["port"] == 9123


def test_config_after_a_nested_subcommand_and_a_bad_file_is_refused_in_either_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [not, a, mapping\n")
    for args in (["--config", str(bad), "eval", "score", "--pred", "p", "--ref", "r"],
                 ["eval", "score", "--pred", "p", "--ref", "r", "--config", str(bad)],
                 ["analyze", "clip.mp4", "--config", str(bad)]):
        r = xemo(*args)
        assert r.returncode == 2 and "error:" in r.stderr and "No such option" not in r.stderr, (args, r.stderr)


def test_a_subcommand_keeps_its_own_option_of_the_same_spelling() -> None:
    group = click.Group("root", params=[click.Option(["--config", "-c"])])
    group.add_command(click.Command("mine", params=[click.Option(["-c", "--count"])]))
    group.add_command(click.Command("other", params=[click.Option(["--x"])]))
    ctx = click.Context(group)
    assert hoist_global_options(group, ctx, ["mine", "-c", "3", "--config", "f"]) == ["--config", "f", "mine", "-c",
                                                                                        "3"]
    assert hoist_global_options(group, ctx, ["other", "--x", "1", "-c", "f"]) == ["-c", "f", "other", "--x", "1"]
    assert hoist_global_options(group, ctx, ["other", "--", "--config", "f"]) == ["other", "--", "--config", "f"]


def test_shell_completion_is_offered() -> None:
    r = xemo("--help")
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout
    names = {c for c in app.registered_groups for c in [c.name]}
    assert "client" in names and "eval" in names


@pytest.mark.slow
def test_analyze_a_directory_or_glob_writes_jsonl_with_progress(tmp_path: Path, testsrc_mp4: Path,
                                                                speech_wav: Path) -> None:
    d = tmp_path / "clips"
    d.mkdir()
    shutil.copy(testsrc_mp4, d / "a.mp4")
    shutil.copy(speech_wav, d / "b.wav")
    (d / "c.mp4").write_bytes(b"this is not a video")
    (d / "notes.txt").write_text("not media")
    out = tmp_path / "out.jsonl"
    r = xemo("analyze", str(d), "--out", str(out), timeout=600)
    assert r.returncode == 1, r.stderr  # one clip failed, and the report says which
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [Path(x["clip"]).name for x in rows] == ["a.mp4", "b.wav", "c.mp4"]
    assert [x["status"] for x in rows] == ["ok", "ok", "error"]
    assert rows[0]["answer"]["emotion"]["label"] and rows[2]["error"]["type"] == "unsupported_format"
    assert "analyse" in r.stderr and "3/3" in r.stderr  # the progress bar


def test_clips_from_paths_directories_and_globs(tmp_path: Path) -> None:
    from xemo.commands.analyze import expand

    for name in ("a.mp4", "b.wav", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert expand([str(tmp_path / "a.mp4")]) == ([tmp_path / "a.mp4"], False)  # one clip: not a batch
    assert expand([str(tmp_path)]) == ([tmp_path / "a.mp4", tmp_path / "b.wav"], True)  # media files only
    assert expand([str(tmp_path / "*.wav")]) == ([tmp_path / "b.wav"], True)  # a quoted glob
    assert expand([str(tmp_path / "a.mp4"), str(tmp_path / "b.wav")]) == ([tmp_path / "a.mp4", tmp_path / "b.wav"],
                                                                          True)  # a glob the shell expanded
    assert expand([str(tmp_path / "*.mkv")]) == ([], True)


@pytest.mark.slow
def test_analyze_a_transcript_alone() -> None:
    r = xemo("analyze", "--transcript", "I am so happy, this is wonderful!", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    a = json.loads(r.stdout)
    assert a["emotion"]["label"] and a["cues"] and {c["modality"] for c in a["cues"]} == {"verbal"}
    assert xemo("analyze").returncode == 2  # nothing at all


@pytest.mark.slow
def test_analyze_asr_transcribes_the_speech_despite_a_transcript(testsrc_mp4: Path) -> None:
    given = "Well, that went better than I expected!"
    r = xemo("analyze", str(testsrc_mp4), "--transcript", given, "--asr", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)["transcript"]
    heard = t["text"].lower()  # words of media.SENTENCE that the given text lacks
    assert t["source"] == "asr" and t["client_text"] == given and "believe" in heard and "again" in heard
    r = xemo("analyze", "--transcript", given, "--asr")  # no clip: refused before any model loads
    assert r.returncode == 2 and "--asr: there is no clip to transcribe" in r.stderr

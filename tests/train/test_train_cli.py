"""`xemo train` refuses what it cannot train with a clear message and exit code 2, before loading any model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from xemo.cli import app


@pytest.mark.parametrize(("args", "message"), [
    (["stage9", "--data", "{data}", "--out", "{out}"], "stage must be one of stage1, stage2, stage3"),
    (["stage1", "--data", "{missing}", "--out", "{out}"], "not a data directory of `xemo data build`"),
    (["stage1", "--data", "{data}", "--out", "{out}", "--steps", "-1"], "--steps must be 0 or more"),
])
def test_bad_train_invocations_exit_2(args: list[str], message: str, toy_data: tuple[Path, Any],
                                      tiny_train: dict[str, Any], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XEMO_CONFIG", raising=False)
    paths = {"data": str(toy_data[0]), "out": str(tmp_path / "run"), "missing": str(tmp_path / "nothing")}
    res = CliRunner().invoke(app, ["--config", str(tiny_train["train_config"]), "train",
                                   *[a.format(**paths) for a in args]])
    assert res.exit_code == 2 and message in res.output, res.output


def test_a_run_of_another_stage_is_not_resumed(runs: dict[str, Any], toy_data: tuple[Path, Any],
                                               tiny_train: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XEMO_CONFIG", raising=False)
    res = CliRunner().invoke(app, ["--config", str(tiny_train["train_config"]), "train", "stage2", "--data",
                                   str(toy_data[0]), "--out", str(runs["stage1"].out)])
    assert res.exit_code == 2 and "holds a stage1 run" in res.output, res.output

"""A run stopped half-way and resumed from RUN/checkpoint.ckpt continues the same loss curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from train_helpers import STEPS

from xemo.settings import Settings


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "eval" not in r}


def test_resume_continues_the_same_loss_curve(runs: dict[str, Any], toy_data: tuple[Path, Any],
                                              train_settings: Settings, tmp_path: Path) -> None:
    from train.loop import run

    out = tmp_path / "resumed"
    half = run(train_settings, "stage1", toy_data[0], out, STEPS // 2, progress=False)
    assert half.last_loss is not None
    rest = run(train_settings, "stage1", toy_data[0], out, STEPS, progress=False)
    assert rest.start_step == STEPS // 2
    whole, resumed = _losses(runs["stage1"].out), _losses(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))  # the rows of the first half are kept, none twice
    for step in range(1, STEPS + 1):
        assert abs(resumed[step] - whole[step]) <= 1e-4 * max(1.0, abs(whole[step])), step
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_from_step"] == STEPS // 2

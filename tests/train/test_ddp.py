"""The distributed path: 2 gloo processes with batch 2 each take the same steps as 1 process with batch 4.

The two ranks are started here with RANK / WORLD_SIZE / LOCAL_RANK (what torchrun sets) and a file rendezvous
(train.dist_init), so no rendezvous socket listens beyond this machine; gloo talks over the loopback device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DDP_STEPS = 3


def test_two_processes_match_one_with_the_doubled_batch(runs: dict[str, Any], toy_data: tuple[Path, Any],
                                                        tiny_train: dict[str, Any], tmp_path: Path) -> None:
    cfg = yaml.safe_load(Path(tiny_train["train_config"]).read_text())
    assert cfg["train"]["batch_size"] == 4  # the single-process reference run
    cfg["train"] |= {"batch_size": 2, "dist_init": f"file://{tmp_path / 'rendezvous'}"}
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XEMO_")}
    env |= {"WORLD_SIZE": "2", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "xemo.cli", "--config", str(config), "train", "stage1", "--data",
           str(toy_data[0]), "--out", str(out), "--steps", str(DDP_STEPS)]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env | {"RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        results = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    summary = json.loads(results[0][0])
    assert summary["steps"] == DDP_STEPS and results[1][0].strip() == ""  # one summary, from rank 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["global_batch"] == 4

    def rows(d: Path) -> list[dict[str, Any]]:
        return [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "eval" not in r]

    ddp, single = rows(out), rows(runs["stage1"].out)[:DDP_STEPS]
    assert [r["step"] for r in ddp] == [1, 2, 3]
    for a, b in zip(ddp, single, strict=True):
        for k in ("loss", "contrastive", "temporal", "masked_frame"):
            assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(b[k])), (a["step"], k, a[k], b[k])
    assert ddp[-1]["loss"] < ddp[0]["loss"]

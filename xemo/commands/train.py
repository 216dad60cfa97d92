"""`xemo train stage1|stage2|stage3`: a thin wrapper over train/loop.py (run it under torchrun for DDP).

Exit codes: 0 trained, 2 bad input, settings or data.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from engines.errors import XemoError
from xemo.settings import Settings


def run(settings: Settings, stage: str, data: Path, out: Path, steps: int | None, init: Path | None) -> int:
    from train.loop import run as train

    try:
        res = train(settings, stage, data, out, steps, init)
    except XemoError as e:
        print(f"error ({e.type}): {e.message}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # one summary under torchrun
        last_eval = res.evals[-1] if res.evals else None
        print(json.dumps({"stage": res.stage, "steps": res.steps, "resumed_from": res.start_step,
                          "first_loss": res.first_loss, "last_loss": res.last_loss, "last_eval": last_eval,
                          "checkpoint": str(res.out / "checkpoint.ckpt")}, indent=2))
    return 0

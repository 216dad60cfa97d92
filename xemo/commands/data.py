"""`xemo data build`: a thin wrapper over train/build.py.

Exit codes: 0 every clip built, 1 built but some clips were bad (listed in the manifest and here), 2 bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engines.errors import XemoError
from xemo.settings import Settings


def build(settings: Settings, clips: Path, csv: Path, out: Path, weak_labels: bool) -> int:
    from rich.console import Console

    from train.build import build as build_data

    err = Console(stderr=True)
    try:
        with err.status("building") as status:
            rep = build_data(settings, clips, csv, out, weak_labels, lambda n: status.update(f"clip {n}"))
    except XemoError as e:
        print(f"error ({e.type}): {e.message}", file=sys.stderr)
        return 2
    print(json.dumps({"rows": rep.rows, "ok": rep.ok, "bad": rep.bad, "splits": rep.splits, "out": rep.out},
                     indent=2))
    return 1 if rep.bad else 0

"""The Grafana dashboard only queries metrics the server exports (a renamed metric would leave a panel empty)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from server.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "xemo.json"
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum")}  # counters' TYPE lines already end in _total


def exported() -> set[str]:
    names = set()
    for line in Metrics().render().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name + s for s in SUFFIXES.get(kind, ("",))}
    return names


def test_every_dashboard_query_names_an_exported_metric() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queried = {n for p in panels for t in p["targets"] for n in re.findall(r"xemo_[a-z0-9_]+", t["expr"])}
    assert len(queried) >= 10
    assert queried <= exported(), sorted(queried - exported())
    # the state shared through Redis is watched too: its errors and the async-job backlog
    assert {"xemo_redis_errors_total", "xemo_redis_up", "xemo_jobs_backlog", "xemo_jobs_total"} <= queried

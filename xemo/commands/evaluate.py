"""`xemo eval score | extract | run`: thin wrappers over eval/ (EmoCue-360, cue extraction, benchmark runner).

Exit codes: 0 done, 1 done but some clips failed (the report says which), 2 bad input or settings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from engines.errors import XemoError
from xemo.settings import Settings


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} file {path.name} is not valid JSON ({e.msg}, line {e.lineno})") from None


def score(settings: Settings, pred: Path, ref: Path, matching: str, threshold: float, as_json: bool) -> int:
    from eval.embed import default_embedder
    from eval.emocue360 import format_table
    from eval.emocue360 import score as score_cues

    if matching not in ("max", "one-to-one"):
        return _err(f"--matching must be 'max' or 'one-to-one', not {matching!r}")
    try:
        p, r = _read_json(pred, "prediction"), _read_json(ref, "reference")
        rep = score_cues(p, r, default_embedder(settings.eval.embedder), matching, threshold)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError, XemoError) as e:
        return _err(getattr(e, "message", None) or str(e))
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        print(format_table(rep))
    return 0


def _read_descriptions(inp: Path) -> dict[str, str]:
    """JSONL rows with an id and a description (also accepted: name / english / reference_description)."""
    if not inp.is_file():
        raise FileNotFoundError(f"input file not found: {inp}")
    from eval.manifest import jsonl_objects

    out: dict[str, str] = {}
    for _, where, row in jsonl_objects(inp):
        rid = row.get("id", row.get("name"))
        text = next((row[k] for k in ("description", "reference_description", "english", "text") if k in row), None)
        if rid is None or not isinstance(text, str):
            raise ValueError(f"{where}: needs 'id' and a string 'description'")
        out[str(rid)] = text
    return out


def extract(settings: Settings, inp: Path, out: Path, extractor: str) -> int:
    from eval.extractors import make_extractor

    if extractor not in ("offline", "openai"):
        return _err(f"--extractor must be 'offline' or 'openai', not {extractor!r}")
    try:
        texts = _read_descriptions(inp)
        ext = make_extractor(settings, extractor)
        cues = {k: ext.extract(v) for k, v in texts.items()}
    except (FileNotFoundError, ValueError, XemoError) as e:
        return _err(getattr(e, "message", None) or str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(cues, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    stats = getattr(ext, "stats", None)
    note = f" ({stats['fallback']} fell back to the offline extractor)" if stats and stats.get("fallback") else ""
    print(f"wrote cues for {len(cues)} descriptions to {out}{note}", file=sys.stderr)
    return 0


def run_manifest(settings: Settings, manifest: Path, out: Path, server: str | None, concurrency: int) -> int:
    from eval.runner import run_benchmark

    if concurrency < 1:
        return _err("--concurrency must be at least 1")
    try:
        res = run_benchmark(settings, manifest, out, server, concurrency)
    except XemoError as e:
        return _err(e.message)
    print(json.dumps(res.summary, indent=2))
    print(f"report: {out / 'report.md'}", file=sys.stderr)
    return 1 if res.details["n_failed"] else 0

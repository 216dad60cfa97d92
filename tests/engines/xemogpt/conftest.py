"""Tiny XEmoGPT parts (tests/tiny_models.py) and their loaded front ends, built once per session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from tiny_models import build_tiny_xemogpt

from xemo.settings import Settings, load_yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_tiny_xemogpt(tmp_path_factory.mktemp("tiny_xemogpt_model"))


@pytest.fixture(scope="session")
def tiny_settings(tiny: dict[str, Any]) -> Settings:
    """Settings from the tiny YAML as init kwargs (no XEMO_CONFIG side effect on other tests)."""
    return Settings(**load_yaml(Path(tiny["config"])))


@pytest.fixture(scope="session")
def sources(tiny_settings: Settings) -> Any:
    from engines.xemogpt.model import from_checkpoint

    src = from_checkpoint(tiny_settings.xemogpt)
    yield src
    src.close()


@pytest.fixture(scope="session")
def front_ends(sources: Any) -> tuple[Any, Any]:
    """(VideoFrontEnd, AudioFrontEnd) with the tiny released checkpoint applied."""
    return sources.build_modules()


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_settings: Settings) -> tuple[Path, int]:
    """`xemo convert-checkpoint --out DIR --gguf` of the tiny checkpoint: (DIR, exit code)."""
    from xemo.commands.convert import run

    out = tmp_path_factory.mktemp("bundle")
    rc = run(tiny_settings, out, gguf=True)
    return out, rc

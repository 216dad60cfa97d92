"""Tiny XEmoGPT parts and one `xemo export` of them, built once per session for the export/runtime tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny_models import build_tiny_xemogpt

from xemo.settings import Settings, load_yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_tiny_xemogpt(tmp_path_factory.mktemp("tiny_xemogpt"))


@pytest.fixture(scope="session")
def make_settings(tiny: dict[str, Any]) -> Callable[..., Settings]:
    """Settings from the tiny YAML with export.* overrides (no env vars involved)."""

    def make(**export: Any) -> Settings:
        data = load_yaml(tiny["config"])
        data["export"] = {
            **data.get("export", {}),
            **{k: str(v) if isinstance(v, Path) else v for k, v in export.items()},
        }
        return Settings(**data)

    return make


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, make_settings: Callable[..., Settings]) -> Path:
    """`xemo export --format onnx` of the tiny front ends (about 20 s: dynamo export of two graphs)."""
    from xemo.commands.export import run

    out = tmp_path_factory.mktemp("export")
    rc = run(make_settings(), out, "onnx", "fp32")
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def torch_front_ends(make_settings: Callable[..., Settings]) -> Any:
    from export.sources import load_torch_front_ends

    return load_torch_front_ends(make_settings())

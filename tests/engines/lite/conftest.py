"""The lite pipeline (real perception, the real SmolLM2 GGUF), loaded once per session for the lite tests."""

from __future__ import annotations

import pytest

from engines.lite.pipeline import LitePipeline
from xemo.settings import Settings


@pytest.fixture(scope="session")
def lite() -> LitePipeline:
    p = LitePipeline(Settings())
    p.load()
    p.warmup()
    yield p
    p.close()

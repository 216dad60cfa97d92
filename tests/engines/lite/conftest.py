"""The lite tests share the session's one lite pipeline (tests/conftest.py: lite_pipeline)."""

from __future__ import annotations

import pytest

from engines.lite.pipeline import LitePipeline


@pytest.fixture(scope="session")
def lite(lite_pipeline: LitePipeline) -> LitePipeline:
    return lite_pipeline

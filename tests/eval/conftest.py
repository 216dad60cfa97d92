"""Fixtures for the eval tests: the real all-MiniLM-L6-v2 embedder, loaded once per session."""

from __future__ import annotations

import pytest

from eval.embed import CachedEmbedder, MiniLMEmbedder


@pytest.fixture(scope="session")
def minilm() -> CachedEmbedder:
    return CachedEmbedder(MiniLMEmbedder())

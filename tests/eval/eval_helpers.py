"""Test helpers for the eval tests: a deterministic embedder whose similarities can be computed by hand."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TableEmbedder:
    """Fixed vectors per text, so every similarity in a test can be computed by hand."""

    name = "table"

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.table = {k: np.asarray(v, dtype=np.float32) for k, v in table.items()}
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.stack([self.table[t] for t in texts])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

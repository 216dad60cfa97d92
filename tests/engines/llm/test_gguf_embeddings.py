"""Token-embedding rows read straight from a GGUF equal what the reference `gguf` reader dequantizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.errors import ModelError
from engines.llm import smollm2_gguf_path
from engines.llm.gguf_embeddings import GGUFEmbeddings


def test_rows_match_the_reference_reader() -> None:
    try:
        path = smollm2_gguf_path()
    except ModelError as e:
        pytest.skip(str(e))
    from gguf import GGUFReader
    from gguf.quants import dequantize

    ids = np.array([0, 1, 2, 700, 49151])
    fast = GGUFEmbeddings(path)
    assert (fast.rows, fast.hidden) == (49152, 576)
    t = next(t for t in GGUFReader(str(path)).tensors if t.name == "token_embd.weight")
    np.testing.assert_array_equal(fast.rows_f32(ids), dequantize(t.data[ids], t.tensor_type))


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.gguf"
    p.write_bytes(b"not a gguf file at all" * 4)
    with pytest.raises(ModelError, match="not a GGUF"):
        GGUFEmbeddings(p)

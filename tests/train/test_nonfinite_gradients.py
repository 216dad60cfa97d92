"""Non-finite gradients under a finite loss stop a run before the optimiser step, with a diagnosis.

The real case: a deep LLM whose pad-token embedding (the prompt's BOS) is all zeros, as a random Hugging Face
init leaves it. RMSNorm's input gradient at a zero vector is 1/sqrt(eps), so the BOS position's gradient grows
with every layer; at 32 layers of the tiny Qwen3 it overflows and reaches the LoRA gradients as NaN, while the
forward pass (and so the loss) stays finite. The same LLM with that row drawn like the others trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import with_train

from engines.errors import BadRequest
from xemo.settings import Settings

DEEP_LAYERS = 32


def _deep_llm(src: Path, dst: Path, bos_row: bool) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.from_pretrained(src)
    cfg.num_hidden_layers, cfg.layer_types = DEEP_LAYERS, ["full_attention"] * DEEP_LAYERS
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    emb = model.get_input_embeddings().weight
    assert not emb[cfg.pad_token_id].any()  # what the random init leaves
    if bos_row:
        with torch.no_grad():
            emb[cfg.pad_token_id].normal_(0.0, cfg.initializer_range)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def _settings(base: Settings, llm: Path) -> Settings:
    s = base.model_copy(update={"xemogpt": base.xemogpt.model_copy(update={"llm": llm})})
    return with_train(s, save_every=1, eval_max_samples=1, eval_max_new_tokens=2)


def test_overflowing_gradients_stop_the_run_before_the_weights_change(
        tmp_path: Path, tiny_train: dict[str, Any], toy_data: tuple[Path, Any], train_settings: Settings) -> None:
    from train.loop import run

    s = _settings(train_settings, _deep_llm(Path(tiny_train["llm"]), tmp_path / "deep_zero_bos", bos_row=False))
    with pytest.raises(BadRequest, match=r"gradients became non-finite at step 1 .*pad-token embedding"):
        run(s, "stage3", toy_data[0], tmp_path / "run_zero_bos", 2, progress=False)
    # the step that overflowed saved nothing (a NaN checkpoint would have replaced any good one)
    assert not (tmp_path / "run_zero_bos" / "checkpoint.ckpt").exists()

    s = _settings(train_settings, _deep_llm(Path(tiny_train["llm"]), tmp_path / "deep_bos", bos_row=True))
    res = run(s, "stage3", toy_data[0], tmp_path / "run_bos", 2, progress=False)
    assert res.first_loss is not None and res.last_loss is not None and res.last_loss == res.last_loss

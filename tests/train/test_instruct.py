"""Stage-3 inputs: the released prompt around the clip's tokens, BOS and prompt masked with -100, the
description (plus EOS) as the only target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engines.xemogpt import prompt
from train.data import read_data, select
from xemo.settings import Settings


def test_prompt_tokens_are_masked_and_the_description_is_the_target(toy_data: tuple[Path, Any],
                                                                     train_settings: Settings) -> None:
    from train.instruct import lm_inputs
    from train.model import build

    _, samples = read_data(toy_data[0])
    batch = select(samples, "stage3", "train")[:2]
    m = build(train_settings, "stage3", torch.device("cpu"), bf16=False).model
    x, att, lab, usage = lm_inputs(m, batch, ["happy", "sad"])
    tok = m.tokenizer
    for k, s in enumerate(batch):
        n_prompt = usage[k]["prompt_tokens"]  # BOS + text + 16 video + audio tokens, as the server counts them
        assert usage[k]["prompt_tokens_video"] == 16 and usage[k]["prompt_tokens_audio"] > 50
        assert (lab[k, :n_prompt] == -100).all() and (lab[k, n_prompt] != -100)
        target = lab[k][lab[k] != -100].tolist()
        assert tok.decode(target) == s.target + tok.eos_token
        assert int(att[k].sum()) == n_prompt + len(target)
    emb = m.llm.get_input_embeddings().weight
    assert torch.equal(x[0, 0], emb[m.pad_id])  # the released BOS: the pad token's embedding
    # then the released text up to the audio placeholder, where the audio tokens start
    head = tok(prompt.HUMAN + prompt.AUDIO.split("<AudioHere>")[0], add_special_tokens=False).input_ids
    assert torch.equal(x[0, 1: 1 + len(head)], emb[head])
    assert not torch.equal(x[0, 1 + len(head)], emb[head[-1]])
    assert x.shape[:2] == att.shape == lab.shape

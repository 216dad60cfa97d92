"""The transformers backend on a tiny random-weight Qwen3 (the XEmoGPT LLM's architecture) saved as a
Hugging Face dir with a tiny BPE tokenizer built here: loading, soft tokens, batching, int8, unsupported
constraints and typed load errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engines.errors import ModelError
from engines.llm import LLMBackend, SamplingParams, UnsupportedConstraint, load_backend

CORPUS = [
    "the person smiles and speaks in a bright voice",
    "her brows are lowered and her voice is loud and fast",
    "he sounds calm and his face is relaxed",
    "the audio has a trembling pitch and the eyes look down",
] * 20


@pytest.fixture(scope="session")
def qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    out = tmp_path_factory.mktemp("tiny-qwen3")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(out)
    cfg = Qwen3Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def qwen3(qwen3_dir: Path) -> LLMBackend:
    b = load_backend(qwen3_dir, "transformers", n_ctx=256, n_threads=1, max_num_seqs=3)
    yield b
    b.close()


def _ids(b: LLMBackend, segments: list, n: int = 12, **kw) -> list[int]:
    async def go() -> list[int]:
        return [t.token_id async for t in b.generate(segments, SamplingParams(max_tokens=n, **kw))]

    return asyncio.run(go())


def test_loads_a_saved_qwen3_dir_and_reports_its_shape(qwen3: LLMBackend) -> None:
    assert qwen3.hidden_size == 64
    assert qwen3.max_context == 256
    assert qwen3.name.startswith("transformers:")
    assert qwen3.detokenize(qwen3.tokenize("her voice is loud")) == "her voice is loud"


def test_soft_tokens_equal_text_and_batching_equals_solo(qwen3: LLMBackend) -> None:
    prompts = ["the person smiles", "her brows are lowered and her voice", "he sounds"]
    solo = [_ids(qwen3, [p]) for p in prompts]
    assert _ids(qwen3, [qwen3.embed_tokens(qwen3.tokenize(prompts[1]))]) == solo[1]

    async def together() -> list[list[int]]:
        started = [asyncio.Event() for _ in prompts]

        async def one(i: int) -> list[int]:
            if i:
                await started[i - 1].wait()  # join once the previous sequence is two tokens in
            out = []
            async for t in qwen3.generate([prompts[i]], SamplingParams(max_tokens=12)):
                out.append(t.token_id)
                if len(out) == 2:
                    started[i].set()
            started[i].set()
            return out

        return list(await asyncio.gather(*(one(i) for i in range(3))))

    sizes: list[int] = []
    qwen3.step_listeners.append(sizes.append)
    try:
        assert asyncio.run(together()) == solo
    finally:
        qwen3.step_listeners.remove(sizes.append)
    assert max(sizes) >= 2


def test_sampling_is_seeded_per_sequence(qwen3: LLMBackend) -> None:
    a = _ids(qwen3, ["the audio"], 10, temperature=1.0, top_p=0.9, seed=7)
    assert a == _ids(qwen3, ["the audio"], 10, temperature=1.0, top_p=0.9, seed=7)
    others = [_ids(qwen3, ["the audio"], 10, temperature=1.0, top_p=0.9, seed=s) for s in (8, 9)]
    assert any(o != a for o in others)


def test_choices_work_and_grammars_are_refused_with_a_typed_error(qwen3: LLMBackend) -> None:
    choices = ["calm", "loud voice", "smiles"]

    async def text() -> str:
        return "".join([t.text async for t in qwen3.generate(["he sounds"], SamplingParams(choices=choices))])

    assert asyncio.run(text()) in choices
    with pytest.raises(UnsupportedConstraint):
        qwen3.generate(["x"], SamplingParams(grammar='root ::= "a"'))
    with pytest.raises(UnsupportedConstraint):
        qwen3.generate(["x"], SamplingParams(json_schema={"type": "object"}))


def test_int8_dynamic_quantization_shrinks_the_weights_and_still_generates(qwen3_dir: Path, qwen3) -> None:
    q = load_backend(qwen3_dir, "transformers", quantization="int8", n_threads=1, max_num_seqs=2)
    try:
        assert q.model_bytes < qwen3.model_bytes
        assert len(_ids(q, ["the person"], 5)) >= 1
    finally:
        q.close()


def test_bfloat16_weights_load_and_generate(qwen3_dir: Path, qwen3) -> None:
    h = load_backend(qwen3_dir, "transformers", dtype="bfloat16", n_threads=1, max_num_seqs=2)
    try:
        assert h.model_bytes * 2 == qwen3.model_bytes
        soft = h.embed_tokens(h.tokenize("the person"))  # float32 out, whatever the weights are
        assert soft.dtype.name == "float32"
        assert len(_ids(h, [soft, " smiles"], 4)) >= 1
    finally:
        h.close()


def test_unusable_settings_give_clear_model_errors(qwen3_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="int4"):
        load_backend(qwen3_dir, "transformers", quantization="int4")
    with pytest.raises(ModelError, match="config.json"):
        load_backend(tmp_path, "transformers")
    with pytest.raises(ModelError, match="not found"):
        load_backend(tmp_path / "missing.gguf", "llama_cpp")
    with pytest.raises(ModelError, match="backend"):
        load_backend(qwen3_dir, "vllm")  # type: ignore[arg-type]
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ModelError, match="CUDA"):
            load_backend(qwen3_dir, "transformers", device="cuda")


def _hf_model(qwen3_dir: Path, dtype: str):  # noqa: ANN202
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(qwen3_dir, dtype=getattr(torch, dtype)).eval()
    return model, AutoTokenizer.from_pretrained(qwen3_dir)


def test_block_wise_int8_is_one_quantize_dynamic_call_in_place(qwen3_dir: Path) -> None:
    import copy

    import torch

    from engines.llm.transformers_backend import quantize_int8_cpu

    model, _ = _hf_model(qwen3_dir, "float32")
    ref = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    out = quantize_int8_cpu(model)
    assert out is model  # in place: no second copy of the model on the way
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    x = torch.tensor([[5, 17, 42, 8, 99]])
    with torch.inference_mode():
        assert torch.equal(model(x).logits, ref(x).logits)


def test_from_model_serves_an_in_memory_model_like_a_loaded_one(qwen3_dir: Path, qwen3: LLMBackend) -> None:
    from engines.llm.transformers_backend import TransformersBackend

    model, tok = _hf_model(qwen3_dir, "float32")
    b = TransformersBackend.from_model(model, tok, "tiny-qwen3", n_threads=1, max_num_seqs=2)
    try:
        assert b.name == "transformers:tiny-qwen3" and b.model_bytes == qwen3.model_bytes
        assert _ids(b, ["the person"], 6) == _ids(qwen3, ["the person"], 6)
    finally:
        b.close()
    model, tok = _hf_model(qwen3_dir, "bfloat16")  # int8 made from bfloat16, block by block
    q = TransformersBackend.from_model(model, tok, "tiny-qwen3", quantization="int8", n_threads=1, max_num_seqs=2)
    try:
        assert q.name.endswith(":int8") and str(q.dtype) == "torch.float32"
        assert q.model_bytes < qwen3.model_bytes
        soft = q.embed_tokens(q.tokenize("the person"))
        assert len(_ids(q, [soft, " smiles"], 4)) >= 1
    finally:
        q.close()

"""llama.cpp-only behaviour on the real SmolLM2 GGUF: GBNF grammars and JSON schemas, the FIFO beyond
max_num_seqs, KV cells freed on cancel, Gemma-style embedding scaling metadata."""

from __future__ import annotations

import asyncio
import json

import pytest

from engines.errors import BadRequest
from engines.llm import LLMBackend, SamplingParams, load_backend, smollm2_gguf_path

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def small() -> LLMBackend:
    """Two slots only, so a third request has to wait in the FIFO."""
    try:
        path = smollm2_gguf_path()
    except Exception as e:
        pytest.skip(str(e))
    b = load_backend(path, "llama_cpp", n_ctx=192, n_threads=1, max_num_seqs=2)
    yield b
    b.close()


def _text(b: LLMBackend, segments: list, params: SamplingParams) -> str:
    async def go() -> str:
        return "".join([t.text async for t in b.generate(segments, params)])

    return asyncio.run(go())


def test_gbnf_grammar_constrains_the_output(small: LLMBackend) -> None:
    grammar = 'root ::= ("yes" | "no") " because " [a-z ]+ "."'
    out = _text(small, ["Is the sky blue? Answer:"], SamplingParams(max_tokens=24, grammar=grammar, stop=["."]))
    assert out.split(" because ")[0] in ("yes", "no")
    with pytest.raises(BadRequest, match="grammar"):
        small.generate(["x"], SamplingParams(grammar="root ::= (unclosed"))


def test_json_schema_output_parses_and_matches_the_schema(small: LLMBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"emotion": {"type": "string", "enum": ["happy", "sad", "angry"]}, "score": {"type": "integer"}},
        "required": ["emotion", "score"],
    }
    out = _text(
        small, ["Return the emotion of 'I lost my keys' as JSON: "], SamplingParams(max_tokens=40, json_schema=schema)
    )
    data = json.loads(out)
    assert data["emotion"] in ("happy", "sad", "angry") and isinstance(data["score"], int)


def test_requests_beyond_max_num_seqs_wait_in_fifo_and_all_finish(small: LLMBackend) -> None:
    seen: list[dict[str, int]] = []

    def watch(_: int) -> None:
        seen.append(small.stats())

    small.step_listeners.append(watch)

    async def main() -> list[str]:
        async def one(p: str) -> str:
            return "".join([t.text async for t in small.generate([p], SamplingParams(max_tokens=8))])

        return list(await asyncio.gather(*(one(p) for p in ["One,", "Two,", "Three,"])))

    try:
        outs = asyncio.run(main())
    finally:
        small.step_listeners.remove(watch)
    assert all(outs)
    assert max(s["running"] for s in seen) == 2
    assert max(s["waiting"] for s in seen) >= 1  # the third waited for a free slot
    assert small.stats() == {"running": 0, "waiting": 0}


def test_cancel_removes_the_sequences_kv_cells(small: LLMBackend) -> None:
    lib = small.lib
    slot_pos: list[int] = []

    async def main() -> None:
        stream = small.generate(["Count: 1, 2, 3,"], SamplingParams(max_tokens=100))
        n = 0
        async for _ in stream:
            n += 1
            if n == 3:
                slot_pos.extend(lib.llama_memory_seq_pos_max(small.mem, s) for s in range(small.max_num_seqs))
                await stream.aclose()
                break

    asyncio.run(main())
    assert max(slot_pos) >= 5  # the running sequence held KV cells
    for _ in range(100):  # the engine drops the sequence at its next step boundary
        if small.stats()["running"] == 0:
            break
        asyncio.run(asyncio.sleep(0.01))
    assert all(lib.llama_memory_seq_pos_max(small.mem, s) == -1 for s in range(small.max_num_seqs))
    assert sorted(small._free_slots) == [0, 1]


def test_metadata(small: LLMBackend) -> None:
    assert small.arch == "llama"  # so embed_tokens returns raw rows (only gemma* is scaled by sqrt(hidden))
    assert small.hidden_size == 576 and small.max_context == 192
    assert small.model_bytes > 50_000_000


def test_a_dropped_stream_frees_its_slot(small: LLMBackend) -> None:
    async def main() -> None:
        stream = small.generate(["Count: 1, 2, 3,"], SamplingParams(max_tokens=100))
        await stream.__anext__()
        await stream.__anext__()
        del stream  # no aclose(): the consumer just lets go of it
        for _ in range(200):  # the engine notices at its next step boundary
            if small.stats()["running"] == 0:
                return
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert small.stats() == {"running": 0, "waiting": 0}
    assert sorted(small._free_slots) == [0, 1]


def test_one_sequence_steps_on_n_threads_prompts_and_batched_steps_on_n_threads_batch() -> None:
    """Each llama_decode runs on the thread count its batch calls for, recorded per call (the value is set in
    llama.cpp only when it changes)."""
    b = load_backend(smollm2_gguf_path(), "llama_cpp", n_ctx=128, n_threads=1, n_threads_batch=2, max_num_seqs=2)
    used: list[tuple[str, int]] = []
    run_batch, decode = b._run_batch, b._decode

    def rb(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        out = run_batch(*a, **kw)
        used.append(("prompt" if len(a[2] if a[2] is not None else a[3]) > 1 else "one", b._threads))
        return out

    def dec(seqs):  # noqa: ANN001, ANN202
        out = decode(seqs)
        used.append((f"step x{len(seqs)}", b._threads))
        return out

    b._run_batch, b._decode = rb, dec
    try:
        _text(b, ["Count to five: one, two,"], SamplingParams(max_tokens=4))

        async def two() -> list[str]:
            async def one(p: str) -> str:
                return "".join([t.text async for t in b.generate([p], SamplingParams(max_tokens=6))])

            return list(await asyncio.gather(one("Red, green,"), one("Monday, Tuesday,")))

        asyncio.run(two())
    finally:
        b.close()
    assert ("prompt", 2) in used and ("step x1", 1) in used and ("step x2", 2) in used
    assert all(n == (1 if kind in ("one", "step x1") else 2) for kind, n in used), used


def test_flash_attention_is_chosen_per_context_and_a_bad_mode_is_refused() -> None:
    """The plain and the fused attention kernels compute the same greedy continuation; an unknown mode is a
    configuration error at load time, not a crash inside llama.cpp."""
    from engines.errors import ModelError

    outs = {}
    for mode in ("off", "on"):
        b = load_backend(smollm2_gguf_path(), "llama_cpp", n_ctx=128, n_threads=1, max_num_seqs=1, flash_attn=mode)
        try:
            assert b.flash_attn == mode
            outs[mode] = _text(b, ["Count: 1, 2, 3,"], SamplingParams(max_tokens=8))
        finally:
            b.close()
    assert outs["off"] == outs["on"] and "4" in outs["off"]
    with pytest.raises(ModelError, match="flash_attn"):
        load_backend(smollm2_gguf_path(), "llama_cpp", n_ctx=128, max_num_seqs=1, flash_attn="fast")  # type: ignore[arg-type]

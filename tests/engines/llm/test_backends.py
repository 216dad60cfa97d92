"""Both LLM backends on the real SmolLM2-135M-Instruct GGUF: soft tokens, continuous batching, cancellation,
constraints, scoring, stop strings and max_tokens.

The same behaviour is asserted on llama_cpp (the GGUF as is) and transformers (the GGUF dequantized to fp32,
cached once per session). Generations are kept short: transformers fp32 decodes a few tokens per second here.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from engines.errors import BadRequest
from engines.llm import LLMBackend, SamplingParams, load_backend, smollm2_gguf_path

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
PROMPTS = [PROMPT, "The sky is", "1, 2, 3, 4,"]
N = 6  # greedy tokens per comparison


def _gguf() -> Path:
    try:
        return smollm2_gguf_path()
    except Exception as e:  # the package is installed by `make install`
        pytest.skip(str(e))


@pytest.fixture(scope="session", params=["llama_cpp", "transformers"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LLMBackend:
    kind = request.param
    if kind == "llama_cpp":
        pytest.importorskip("llama_cpp")
    b = load_backend(
        _gguf(),
        kind,
        n_ctx=256,
        n_threads=1,  # a second thread only adds barrier waits when the cores are shared with other jobs
        max_num_seqs=4,
        # the fp32 copy of the GGUF lives beside pytest's per-session temp dirs, so only the first session pays
        # for transformers' slow GGUF dequantization (20-60 s); later sessions reload it in about a second
        cache_dir=tmp_path_factory.getbasetemp().parent / "xemo-llm-cache" if kind == "transformers" else None,
    )
    yield b
    b.close()


async def _collect(b: LLMBackend, segments: list, params: SamplingParams) -> list:
    return [t async for t in b.generate(segments, params)]


def _text(tokens: list) -> str:
    return "".join(t.text for t in tokens)


def _greedy(n: int = N, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, **kw)


@pytest.fixture(scope="session")
def solo(backend: LLMBackend) -> dict[str, list[int]]:
    """Greedy token ids of each prompt generated alone."""
    out = {}
    for p in PROMPTS:
        toks = asyncio.run(_collect(backend, [p], _greedy()))
        out[p] = [t.token_id for t in toks]
    return out


def test_soft_tokens_of_a_text_continue_exactly_like_the_text(backend: LLMBackend, solo) -> None:
    ids = backend.tokenize(PROMPT)
    emb = backend.embed_tokens(ids)
    assert emb.shape == (len(ids), backend.hidden_size) and emb.dtype == np.float32
    as_soft = asyncio.run(_collect(backend, [emb], _greedy()))
    assert [t.token_id for t in as_soft] == solo[PROMPT]
    # text, soft tokens, text in one prompt (the layout a multimodal prompt uses)
    head, mid, tail = PROMPT[:12], PROMPT[12:40], PROMPT[40:]
    mixed = [head, backend.embed_tokens(backend.tokenize(mid)), tail]
    if backend.tokenize(head) + backend.tokenize(mid) + backend.tokenize(tail) == ids:
        assert [t.token_id for t in asyncio.run(_collect(backend, mixed, _greedy()))] == solo[PROMPT]
    assert _text(asyncio.run(_collect(backend, [PROMPT], _greedy(8)))).startswith("The capital of France")


def test_chunked_prefill_gives_the_same_continuation_and_scores(backend: LLMBackend, solo) -> None:
    emb = backend.embed_tokens(backend.tokenize(PROMPT))
    before = asyncio.run(backend.score_choices([PROMPT], [" Paris", " London"]))
    old = backend.prefill_chunk
    backend.prefill_chunk = 5  # the 16-token prompt now enters the KV cache over 4 engine iterations
    try:
        assert [t.token_id for t in asyncio.run(_collect(backend, [emb], _greedy()))] == solo[PROMPT]
        after = asyncio.run(backend.score_choices([PROMPT], [" Paris", " London"]))
    finally:
        backend.prefill_chunk = old
    assert after == pytest.approx(before, abs=1e-3)


def test_batched_generation_with_staggered_joins_equals_one_by_one(backend: LLMBackend, solo) -> None:
    sizes: list[int] = []
    threads: set[str] = set()

    def on_step(n: int) -> None:
        sizes.append(n)
        threads.add(threading.current_thread().name)

    backend.step_listeners.append(on_step)

    async def main() -> list[list[int]]:
        started = [asyncio.Event() for _ in PROMPTS]

        async def run(i: int) -> list[int]:
            if i:
                await started[i - 1].wait()  # join while the previous sequences are mid-generation
            out = []
            # the last prompt goes in as soft tokens: mixed token/embedding prompts share the batch
            seg = backend.embed_tokens(backend.tokenize(PROMPTS[i])) if i == len(PROMPTS) - 1 else PROMPTS[i]
            async for t in backend.generate([seg], _greedy()):
                out.append(t.token_id)
                if len(out) == 2:
                    started[i].set()
            started[i].set()
            return out

        return list(await asyncio.gather(*(run(i) for i in range(len(PROMPTS)))))

    try:
        got = asyncio.run(main())
    finally:
        backend.step_listeners.remove(on_step)
    assert got == [solo[p] for p in PROMPTS]
    assert max(sizes) >= 2, f"sequences never shared a decode step: {sizes}"
    assert threads and threading.main_thread().name not in threads  # model work stays off the event loop
    assert backend.stats() == {"running": 0, "waiting": 0}


@pytest.mark.parametrize("how", ["cancel_task", "aclose"])
def test_cancelling_one_sequence_leaves_the_others_intact_and_frees_its_slot(
    backend: LLMBackend, solo, how: str
) -> None:
    sizes: list[int] = []
    backend.step_listeners.append(sizes.append)

    async def main() -> tuple[list[list[int]], int]:
        victim_tokens = 0
        first = asyncio.Event()

        async def victim() -> None:
            nonlocal victim_tokens
            stream = backend.generate([PROMPTS[1]], _greedy(200))
            async for _ in stream:
                victim_tokens += 1
                first.set()
                if how == "aclose" and victim_tokens == 2:
                    await stream.aclose()
                    break

        async def other(p: str) -> list[int]:
            await first.wait()
            return [t.token_id async for t in backend.generate([p], _greedy())]

        vt = asyncio.create_task(victim())
        others = asyncio.gather(other(PROMPTS[0]), other(PROMPTS[2]))
        if how == "cancel_task":
            await first.wait()
            await asyncio.sleep(0)
            vt.cancel()
        res = await others
        try:
            await vt
        except asyncio.CancelledError:
            pass
        return res, victim_tokens

    try:
        (a, c), victim_tokens = asyncio.run(main())
    finally:
        backend.step_listeners.remove(sizes.append)
    assert a == solo[PROMPTS[0]] and c == solo[PROMPTS[2]]
    assert victim_tokens < 200
    assert backend.stats() == {"running": 0, "waiting": 0}
    assert sorted(backend._free_slots) == list(range(backend.max_num_seqs))  # every slot back
    # the victim left the batch: the last steps ran with at most the two others
    assert sizes and sizes[-1] <= 2


def test_choices_constraint_returns_exactly_one_choice(backend: LLMBackend) -> None:
    prompt = "Q: Is fire hot or cold?\nA (one word):"
    choices = [" hot", " cold", " lukewarm"]
    toks = asyncio.run(_collect(backend, [prompt], _greedy(10, choices=choices)))
    assert _text(toks) in choices
    assert toks[-1].finish_reason == "stop"


# Each phrase at most once, in any order, joined by ", "; the guard keeps ", " from following the last phrase.
PHRASES = ["the eyes squint", "the person smiles", "the voice is loud"]
ONCE_EACH = "start: pick::0x0\n" + "pick::_ : " + "\n    | ".join(
    f'"{p}" after::set_bit({i}) %if bit_clear({i})' for i, p in enumerate(PHRASES)
) + f'\nafter::_ : "." | ", " pick::_ %if not(is_ones([0:{len(PHRASES)}]))\n'


def test_lark_grammar_allows_each_phrase_once_in_any_order(backend: LLMBackend) -> None:
    """A prompt that begs for repeats, sampled hot over several seeds: only the grammar's language comes out."""
    prompt = "Repeat after me: the eyes squint, the eyes squint, the eyes squint, the eyes squint and"
    for seed in range(3):
        toks = asyncio.run(_collect(backend, [prompt], SamplingParams(max_tokens=40, temperature=1.5, seed=seed,
                                                                      lark=ONCE_EACH)))
        text = _text(toks)
        assert toks[-1].finish_reason == "stop", text
        assert text.endswith("."), text
        used = text[:-1].split(", ")
        assert set(used) <= set(PHRASES) and len(used) == len(set(used)), text


def test_a_lark_grammar_that_does_not_compile_is_a_bad_request(backend: LLMBackend) -> None:
    with pytest.raises(BadRequest, match="grammar"):
        backend.generate(["x"], SamplingParams(max_tokens=4, lark="start: nothing_defined"))
    with pytest.raises(BadRequest, match="at most one"):
        backend.generate(["x"], SamplingParams(max_tokens=4, lark=ONCE_EACH, choices=["a"]))


def test_score_choices_ranks_the_obvious_continuation_first(backend: LLMBackend) -> None:
    scores = asyncio.run(backend.score_choices(["The capital of France is"], [" Paris", " London", " a banana"]))
    assert max(scores, key=scores.get) == " Paris"
    assert all(v < 0 for v in scores.values())
    assert scores[" a banana"] < scores[" London"]


def test_max_tokens_and_stop_strings_are_honoured(backend: LLMBackend, solo) -> None:
    toks = asyncio.run(_collect(backend, [PROMPTS[2]], _greedy(3)))
    assert len(toks) == 3 and toks[-1].finish_reason == "length"
    assert toks[-1].usage == {"prompt_tokens": len(backend.tokenize(PROMPTS[2])), "completion_tokens": 3}
    full = _text(asyncio.run(_collect(backend, [PROMPTS[2]], _greedy())))
    assert " 6" in full
    cut = asyncio.run(_collect(backend, [PROMPTS[2]], _greedy(stop=[" 6"])))
    assert _text(cut) == full[: full.index(" 6")]
    assert cut[-1].finish_reason == "stop"


def test_bad_prompts_are_rejected_before_any_work(backend: LLMBackend) -> None:
    with pytest.raises(BadRequest):
        backend.generate([np.zeros((3, backend.hidden_size + 1), np.float32)], _greedy())
    with pytest.raises(BadRequest):
        backend.generate([np.full((2, backend.hidden_size), np.nan, np.float32)], _greedy())
    with pytest.raises(BadRequest):
        backend.generate(["word " * 400], _greedy())  # longer than n_ctx=256
    with pytest.raises(BadRequest):
        backend.generate([], _greedy())


def test_scoring_while_another_sequence_generates_changes_neither(backend: LLMBackend, solo) -> None:
    alone = asyncio.run(backend.score_choices(["The capital of France is"], [" Paris", " London"]))

    async def main() -> tuple[list[int], dict[str, float]]:
        first = asyncio.Event()

        async def gen() -> list[int]:
            out = []
            async for t in backend.generate([PROMPTS[2]], _greedy()):
                out.append(t.token_id)
                first.set()
            return out

        async def score() -> dict[str, float]:
            await first.wait()
            return await backend.score_choices(["The capital of France is"], [" Paris", " London"])

        g, s = await asyncio.gather(gen(), score())
        return g, s

    ids, scores = asyncio.run(main())
    assert ids == solo[PROMPTS[2]]
    assert scores == pytest.approx(alone, abs=1e-3)


# Two sentences whose words are fixed once the first is chosen: most tokens are forced by the grammar.
FORCED = (
    'start: s " " t\n'
    's: "The person smiles broadly and the corners of the mouth turn up." | "The person frowns."\n'
    't: "The voice is loud and the speech is fast." | "The voice is soft."\n'
)


def test_forced_tokens_are_written_in_one_step_and_change_no_output(backend: LLMBackend) -> None:
    """Tokens the grammar forces skip sampling (and, on llama_cpp, go into the KV cache with one forward pass),
    yet greedy output, scores and a sequence sharing the batch are unchanged."""
    steps: list[int] = []
    backend.step_listeners.append(steps.append)
    prompt = "Describe the clip in two sentences.\n"

    async def both() -> list[list]:
        return list(await asyncio.gather(_collect(backend, [prompt], _greedy(60, lark=FORCED)),
                                         _collect(backend, [PROMPTS[1]], _greedy())))

    try:
        fast = asyncio.run(both())
        n_fast = len(steps)
        backend.fast_forward = False
        steps.clear()
        slow = asyncio.run(both())
        n_slow = len(steps)
    finally:
        backend.fast_forward = True
        backend.step_listeners.remove(steps.append)
    text = _text(fast[0])
    assert text == _text(slow[0]) and text.count(".") == 2 and fast[0][-1].finish_reason == "stop", text
    assert [t.token_id for t in fast[1]] == [t.token_id for t in slow[1]]  # the batch neighbour is untouched
    assert fast[0][-1].usage["completion_tokens"] == len(fast[0])
    assert any(t.logprob is None for t in fast[0]) and all(t.logprob is not None for t in slow[0])
    if backend.max_step_tokens > 1:
        assert n_fast < n_slow / 2, (n_fast, n_slow)

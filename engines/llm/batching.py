"""Continuous batching shared by the LLM backends: one engine thread owns the model and schedules sequences.

Between decode steps the engine admits waiting sequences (FIFO) up to `max_num_seqs`; every step then decodes
one token for all running sequences in a single forward pass. Prompts are prefilled in chunks of at most
`prefill_chunk` tokens, one chunk between two decode steps, so a 700-token multimodal prompt joining the batch
delays the running streams by one chunk at a time instead of its whole prefill. Finished and cancelled
sequences leave at once and their slot (and KV cells) are freed. Tokens a constraint forces (a grammar whose
next bytes are fixed) are streamed at once and written to the KV cache in the next step together with the sampled
token before them, one forward pass for all of them instead of one each (backends whose `_decode` takes one token
per sequence, `max_step_tokens = 1`, write them one step at a time without sampling). Tokens go back to the event
loop with `loop.call_soon_threadsafe`, so no model work ever runs on the loop.

A backend subclasses `BatchedBackend` and implements the model hooks `_prefill_chunk`, `_decode`, `_release`
and `_score` (all called only from the engine thread); `_reuse_prefix` / `_prompt_done` let it skip the
prefill of a prompt prefix whose KV it already holds (prefix caching, engines/llm/prefix_cache.py).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.errors import BadRequest, ModelError, XemoError
from engines.llm.base import LLMBackend, SamplingParams, Segment, Token
from engines.llm.sampling import (
    ChoiceTrie,
    Constraint,
    Detokenizer,
    SequenceSampler,
    UnsupportedConstraint,
    validate_params,
)

log = logging.getLogger(__name__)

# A prompt after tokenization: runs of token ids and runs of soft-token embeddings, in order.
Part = tuple[str, Any]  # ("ids", list[int]) | ("embd", np.ndarray (n, hidden) float32)


@dataclass(eq=False)  # identity semantics: sequences are compared and removed by object, never by value
class Seq:
    """One generation or scoring request as the engine sees it."""

    parts: list[Part]
    n_prompt: int
    params: SamplingParams | None = None
    sampler: SequenceSampler | None = None
    choices: list[list[int]] | None = None  # for scoring
    loop: asyncio.AbstractEventLoop | None = None
    deliver: Callable[[Any], None] | None = None
    cancelled: bool = False
    slot: int = -1
    pos: int = 0  # next position to write (= tokens in the KV cache)
    cursor: tuple[int, int] = (0, 0)  # prefill progress: (part index, offset in that part)
    # Tokens chosen but not yet in the KV cache: the sampled one, then those the constraint forced after it.
    feed: list[int] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)  # the part of `feed` the current decode step writes
    state: dict[str, Any] = field(default_factory=dict)  # backend-specific (grammar sampler, cache rows)
    usage: dict[str, int] = field(default_factory=dict)
    t_submit: float = 0.0


class TokenStream:
    """The async iterator `generate` returns. Closing it or cancelling its consumer cancels the sequence.

    `usage` holds prompt/completion token counts once the sequence is done (also on the last Token).
    """

    def __init__(self, backend: BatchedBackend, seq: Seq) -> None:
        self._backend = backend
        self._seq = seq
        self._queue: asyncio.Queue[Any] | None = None
        self._done = False

    @property
    def usage(self) -> dict[str, int]:
        return dict(self._seq.usage)

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> Token:
        if self._done:
            raise StopAsyncIteration
        if self._queue is None:  # submit lazily: a stream nobody iterates costs nothing
            loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
            self._seq.loop = loop
            self._seq.deliver = self._queue.put_nowait
            self._backend._submit(self._seq)
        try:
            item = await self._queue.get()
        except BaseException:  # CancelledError (consumer task cancelled) or loop teardown
            self._cancel()
            raise
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item

    async def aclose(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if not self._done:
            self._done = True
            self._backend._cancel(self._seq)

    def __del__(self) -> None:  # a consumer that just drops the iterator frees the slot too
        if not self._done and self._queue is not None:
            self._seq.cancelled = True


class BatchedBackend(LLMBackend):
    """Scheduling, validation and streaming; subclasses provide the model."""

    eos_id: int
    vocab_size: int
    max_step_tokens = 1  # tokens one sequence may write in one decode step (forced tokens; see the docstring)
    fast_forward = True  # stream forced tokens without sampling them (off: every token is sampled, one per step)

    def __init__(self, max_num_seqs: int, max_context: int) -> None:
        if max_num_seqs < 1:
            raise ModelError("max_num_seqs must be at least 1")
        self.max_num_seqs = max_num_seqs
        self.max_context = max_context
        self.step_listeners: list[Callable[[int], None]] = []
        self._waiting: collections.deque[Seq] = collections.deque()
        self._running: list[Seq] = []
        self._prefilling: list[Seq] = []  # admitted (slot held), prompt partly in the KV cache
        self.prefill_chunk = 256
        self._free_slots = list(range(max_num_seqs))
        self._cv = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    # ---- model hooks (engine thread only) -------------------------------------------------------------
    @abc.abstractmethod
    def _prefill_chunk(self, seq: Seq, parts: list[Part], pos0: int, last: bool) -> np.ndarray | None:
        """Append `parts` (positions pos0...) to the KV cache of `seq`; when `last`, return the next-token
        logits (vocab,) after the whole prompt."""

    @abc.abstractmethod
    def _decode(self, seqs: list[Seq]) -> list[np.ndarray]:
        """One forward pass: write each seq's `step_tokens` (at most `max_step_tokens`) at positions `pos`...;
        return each seq's next-token logits after its last step token."""

    @abc.abstractmethod
    def _release(self, seq: Seq) -> None:
        """Drop the KV cells of `seq` (its slot is reused afterwards)."""

    @abc.abstractmethod
    def _score(self, seq: Seq, first: np.ndarray) -> list[float]:
        """Sum log-prob of each of `seq.choices` after the prefilled prompt (`first` = its next-token logits);
        the KV cache must hold only the prompt afterwards."""

    def _reuse_prefix(self, seq: Seq) -> int:
        """Before the first prefill chunk: put the KV of an already-computed prefix of the prompt into the slot
        of `seq` and return its length (< n_prompt), or 0. Backends without a prefix cache reuse nothing."""
        return 0

    def _prompt_done(self, seq: Seq) -> None:  # noqa: B027 - optional hook
        """After the whole prompt of `seq` is in its KV cache (before scoring or sampling)."""

    @abc.abstractmethod
    def _detokenizer(self) -> Detokenizer: ...

    def _ll_tokenizer(self) -> Any:
        """The llguidance tokenizer for this model (built once); backends that can enforce Lark grammars
        override it."""
        raise UnsupportedConstraint(f"{self.name} cannot enforce Lark grammars")

    @abc.abstractmethod
    def _is_eos(self, token: int) -> bool: ...

    def _constraint(self, params: SamplingParams) -> Constraint | None:
        """Build the sequence's constraint; backends override to add grammar / JSON schema support."""
        if params.lark is not None:
            from engines.llm.guidance import LarkConstraint

            return LarkConstraint(self._ll_tokenizer(), params.lark)
        if params.choices is not None:
            return ChoiceTrie([self.tokenize(c) for c in params.choices], self.eos_id)
        return None

    # ---- public API ---------------------------------------------------------------------------------
    def generate(self, segments: list[Segment], params: SamplingParams) -> TokenStream:
        validate_params(params)
        parts, n = self._parts(segments)
        room = self.max_context - n
        if room < 1:
            raise BadRequest(f"the prompt has {n} tokens but the context holds {self.max_context}")
        constraint = self._constraint(params)
        sampler = SequenceSampler(params, self._detokenizer(), self._is_eos, constraint, room)
        seq = Seq(parts=parts, n_prompt=n, params=params, sampler=sampler)
        return TokenStream(self, seq)

    async def score_choices(self, segments: list[Segment], choices: list[str]) -> dict[str, float]:
        if not choices or any(not isinstance(c, str) or not c for c in choices):
            raise BadRequest("choices must be a non-empty list of non-empty strings")
        parts, n = self._parts(segments)
        ids = [self.tokenize(c) for c in choices]
        if any(not x for x in ids):
            raise BadRequest("every choice must tokenize to at least one token")
        if n < 1:
            raise BadRequest("scoring needs a non-empty prompt")
        if n + max(len(x) for x in ids) > self.max_context:
            raise BadRequest(f"the prompt has {n} tokens but the context holds {self.max_context}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def deliver(item: Any) -> None:
            if not fut.done():
                fut.set_result(item)

        seq = Seq(parts=parts, n_prompt=n, choices=ids, loop=loop, deliver=deliver)
        self._submit(seq)
        try:
            res = await fut
        except BaseException:
            self._cancel(seq)
            raise
        if isinstance(res, BaseException):
            raise res
        return dict(zip(choices, res, strict=True))

    def stats(self) -> dict[str, int]:
        return {"running": len(self._running) + len(self._prefilling), "waiting": len(self._waiting)}

    def close(self) -> bool:
        """Stop the engine thread (failing pending requests). Returns False if it did not stop in time, in
        which case native resources must not be freed."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30)
            if t.is_alive():
                log.error("LLM engine thread did not stop within 30 s")
                return False
        self._thread = None
        return True

    # ---- prompt preparation (event loop; cheap) ------------------------------------------------------
    def _parts(self, segments: list[Segment]) -> tuple[list[Part], int]:
        if not isinstance(segments, list | tuple) or not segments:
            raise BadRequest("the prompt must be a non-empty list of text and soft-token segments")
        parts: list[Part] = []
        for s in segments:
            if isinstance(s, str):
                ids = self.tokenize(s)
                if ids:
                    parts.append(("ids", ids))
            elif isinstance(s, np.ndarray):
                if s.ndim != 2 or s.shape[1] != self.hidden_size:
                    raise BadRequest(f"soft tokens must have shape (n, {self.hidden_size}); got {tuple(s.shape)}")
                if len(s) == 0:
                    continue
                if not np.issubdtype(s.dtype, np.floating) or not np.isfinite(s).all():
                    raise BadRequest("soft tokens must be finite floating-point values")
                parts.append(("embd", np.ascontiguousarray(s, dtype=np.float32)))
            else:
                raise BadRequest("prompt segments must be str or numpy arrays")
        n = sum(len(p[1]) for p in parts)
        if n == 0:
            raise BadRequest("the prompt is empty")
        return parts, n

    # ---- engine thread ------------------------------------------------------------------------------
    def _submit(self, seq: Seq) -> None:
        with self._cv:
            if self._closed:
                raise ModelError("the LLM backend is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"llm-engine-{self.name}", daemon=True)
                self._thread.start()
            seq.t_submit = time.perf_counter()
            self._waiting.append(seq)
            self._cv.notify_all()

    def _cancel(self, seq: Seq) -> None:
        seq.cancelled = True
        with self._cv:
            self._cv.notify_all()

    def _send(self, seq: Seq, item: Any) -> None:
        if seq.loop is None or seq.deliver is None:
            return
        try:
            seq.loop.call_soon_threadsafe(seq.deliver, item)
        except RuntimeError:  # the consumer's loop is gone: nobody is listening any more
            seq.cancelled = True

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not (self._waiting or self._running or self._prefilling):
                    self._cv.wait()
                if self._closed:
                    break
                while self._waiting and len(self._running) + len(self._prefilling) < self.max_num_seqs:
                    s = self._waiting.popleft()
                    if not s.cancelled:
                        s.slot, s.pos, s.cursor = self._free_slots.pop(0), 0, (0, 0)
                        self._prefilling.append(s)
            try:
                self._iteration()
            except Exception as e:  # a bug must not kill the engine and leave consumers waiting forever
                log.exception("LLM engine iteration failed")
                for s in self._running + self._prefilling:
                    self._fail(s, e)
                self._running, self._prefilling = [], []
        # Closing: fail whatever is still queued or running so no consumer waits forever.
        for s in self._running + self._prefilling + list(self._waiting):
            self._send(s, ModelError("the LLM backend was closed"))
            if s.slot >= 0:
                self._finish(s, None)
        self._running, self._prefilling = [], []
        self._waiting.clear()

    def _iteration(self) -> None:
        """One prefill chunk (if any prompt is pending), then one decode step for every running sequence."""
        for s in [s for s in self._running + self._prefilling if s.cancelled]:
            self._finish(s, None)
        if self._prefilling:
            self._prefill_next(self._prefilling[0])
        if self._running:
            self._step()

    def _prefill_next(self, s: Seq) -> None:
        try:
            if s.pos == 0 and s.cursor == (0, 0) and (reused := self._reuse_prefix(s)):
                s.pos = reused
                s.cursor = _cursor_at(s.parts, reused)
            # Chunks end at multiples of prefill_chunk (positions, not offsets), so a prompt resumed from a cached
            # prefix is split like a cold one after that point: same batch shapes, same numerics.
            parts, n, done = self._take(s, self.prefill_chunk - s.pos % self.prefill_chunk)
            logits = self._prefill_chunk(s, parts, s.pos, done)
            s.pos += n
            if not done:
                return
            self._prefilling.remove(s)
            assert logits is not None
            self._prompt_done(s)
            if s.choices is not None:
                scores = self._score(s, logits)
                self._finish(s, None)
                self._send(s, scores)
                return
        except Exception as e:  # any failure goes to that request; the engine lives on
            if s in self._prefilling:
                self._prefilling.remove(s)
            self._fail(s, e)
            return
        s.usage = {"prompt_tokens": s.n_prompt, "completion_tokens": 0}
        self._running.append(s)
        self._emit(s, logits)

    @staticmethod
    def _take(s: Seq, budget: int) -> tuple[list[Part], int, bool]:
        """The next at most `budget` prompt tokens of `s` (never mixing kinds within one part)."""
        k, off = s.cursor
        out: list[Part] = []
        n = 0
        while k < len(s.parts) and n < budget:
            kind, data = s.parts[k]
            piece = data[off : off + budget - n]
            out.append((kind, piece))
            n += len(piece)
            off += len(piece)
            if off >= len(data):
                k, off = k + 1, 0
        s.cursor = (k, off)
        return out, n, k >= len(s.parts)

    def _step(self) -> None:
        batch = list(self._running)
        for s in batch:
            s.step_tokens = s.feed[: self.max_step_tokens]
        try:
            all_logits = self._decode(batch)
        except Exception as e:
            for s in batch:
                self._running.remove(s)
                self._fail(s, e)
            return
        for s, logits in zip(batch, all_logits, strict=True):
            s.pos += len(s.step_tokens)
            del s.feed[: len(s.step_tokens)]
            if s.feed:  # forced tokens still to write: nothing to sample before they are in
                if s.cancelled:
                    self._finish(s, None)
                continue
            self._emit(s, logits)
        for cb in list(self.step_listeners):
            try:
                cb(len(batch))
            except Exception:  # a metrics hook must not stop generation
                log.exception("step listener failed")

    def _emit(self, s: Seq, logits: np.ndarray) -> None:
        """Sample the next token of `s` from `logits`, stream it, and retire `s` if it finished."""
        if s.cancelled:
            self._finish(s, None)
            return
        assert s.sampler is not None
        try:
            steps = [s.sampler.step(logits)]
            if steps[0].finish_reason is None and self.fast_forward:
                steps += s.sampler.fast_forward()
        except Exception as e:
            self._running.remove(s)
            self._fail(s, e)
            return
        s.feed = [st.token for st in steps]
        s.usage["completion_tokens"] = s.sampler.generated
        finish = steps[-1].finish_reason  # the sampler also stops at the context size (its max_new)
        usage = dict(s.usage) if finish else None
        if finish:  # free the slot before the consumer sees the last token
            self._finish(s, finish)
        for st in steps[:-1]:
            self._send(s, Token(st.text, st.token, st.logprob))
        st = steps[-1]
        self._send(s, Token(st.text, st.token, st.logprob, finish_reason=finish, usage=usage))

    def _finish(self, s: Seq, reason: str | None) -> None:
        if s in self._running:
            self._running.remove(s)
        if s in self._prefilling:
            self._prefilling.remove(s)
        try:
            self._release(s)
        finally:
            self._free_slots.append(s.slot)
            s.slot = -1

    def _fail(self, s: Seq, e: Exception) -> None:
        if not isinstance(e, XemoError):
            log.exception("LLM engine error", exc_info=e)
            e = ModelError(f"the language model failed: {type(e).__name__}")
        try:
            self._release(s)
        except Exception:
            log.exception("releasing a failed sequence")
        if s.slot >= 0:
            self._free_slots.append(s.slot)
            s.slot = -1
        self._send(s, e)


def _cursor_at(parts: list[Part], n: int) -> tuple[int, int]:
    """The (part index, offset) of prompt token `n`: where a prefill resumes after `n` reused tokens."""
    k = 0
    while k < len(parts) and n >= len(parts[k][1]):
        n -= len(parts[k][1])
        k += 1
    return k, n

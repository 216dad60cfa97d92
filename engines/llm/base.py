"""The one interface every LLM runtime implements (transformers, llama.cpp).

A prompt is a list of segments: text (tokenized by the backend) or soft tokens (float32 array of shape
(n, hidden_size) placed as input embeddings). Generation is an async stream of `Token`s; several sequences run
at once (the backend batches them: new sequences join between decode steps) and closing or cancelling the
consumer of a stream frees that sequence's slot.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

Segment = str | np.ndarray


@dataclass
class SamplingParams:
    max_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    choices: list[str] | None = None  # constrain the output to exactly one of these strings
    grammar: str | None = None  # GBNF grammar (llama.cpp syntax); backends that lack it raise
    lark: str | None = None  # llguidance Lark grammar (engines/llm/guidance.py); both backends enforce it
    json_schema: dict | None = None  # constrain to JSON matching this schema


@dataclass
class Token:
    text: str  # detokenized piece (may be "" for partial UTF-8)
    token_id: int
    logprob: float | None = None
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" on the last token
    usage: dict[str, int] | None = None  # on the last token: {"prompt_tokens": n, "completion_tokens": m}


class LLMBackend(abc.ABC):
    name: str  # e.g. "llama_cpp:SmolLM2-135M-Instruct.Q4_1"
    hidden_size: int
    max_context: int

    @abc.abstractmethod
    def tokenize(self, text: str, add_special: bool = False) -> list[int]: ...

    @abc.abstractmethod
    def detokenize(self, ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """The input embeddings the model would use for these ids, (n, hidden_size) float32, already scaled
        the way the model scales token embeddings (Gemma multiplies by sqrt(hidden))."""

    @abc.abstractmethod
    def generate(self, segments: list[Segment], params: SamplingParams) -> AsyncIterator[Token]:
        """Stream tokens for one sequence. Must be safe to call concurrently from one event loop; closing the
        iterator (or cancelling the task consuming it) stops that sequence and frees its slot."""

    @abc.abstractmethod
    async def score_choices(self, segments: list[Segment], choices: list[str]) -> dict[str, float]:
        """Log-likelihood of each choice as the continuation of the prompt (sum over its tokens)."""

    def prompt_tokens(self, segments: list[Segment]) -> int:
        return sum(len(s) if isinstance(s, np.ndarray) else len(self.tokenize(s)) for s in segments)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources (worker threads, contexts)."""

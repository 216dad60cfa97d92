"""Per-sequence token selection shared by every backend: constraints, greedy/temperature/top-p, stop strings.

Backends hand raw next-token logits (numpy, float32, shape (vocab,)) to a `SequenceSampler`; it applies the
sequence's constraint (a choice trie here, or a backend's grammar), picks a token with the sequence's own seeded
RNG, and turns the token into releasable text (holding back text that may still become a stop string).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engines.errors import BadRequest
from engines.llm.base import SamplingParams


class UnsupportedConstraint(BadRequest):
    """The configured backend cannot enforce the requested constraint (e.g. a GBNF grammar on transformers)."""

    type = "unsupported_constraint"


def validate_params(params: SamplingParams) -> None:
    """Reject sampling parameters that cannot mean anything, before any work starts."""
    if params.max_tokens < 1:
        raise BadRequest("max_tokens must be at least 1")
    if params.temperature < 0 or not np.isfinite(params.temperature):
        raise BadRequest("temperature must be a finite number >= 0")
    if not 0 < params.top_p <= 1:
        raise BadRequest("top_p must be in (0, 1]")
    if any(not isinstance(s, str) or not s for s in params.stop):
        raise BadRequest("stop strings must be non-empty strings")
    n_constraints = sum(x is not None for x in (params.choices, params.grammar, params.lark, params.json_schema))
    if n_constraints > 1:
        raise BadRequest("use at most one of choices, grammar, lark and json_schema")
    if params.choices is not None and (not params.choices or any(not c for c in params.choices)):
        raise BadRequest("choices must be a non-empty list of non-empty strings")


class Constraint:
    """Restricts which tokens may come next by setting the logits of forbidden tokens to -inf."""

    def mask_logits(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def accept(self, token: int) -> None:  # noqa: B027 - stateless constraints ignore it
        """Advance the constraint's state past `token`."""

    def forced(self) -> list[int]:
        """Tokens the constraint allows as the only continuation from here (possibly none); the caller accepts
        them one by one. Sampling them would only ever pick them, so the engine writes them without a decode
        step each."""
        return []

    @property
    def complete(self) -> bool:
        """True when the output is complete and nothing else may follow (the sequence stops)."""
        return False

    def close(self) -> None:  # noqa: B027 - only native-backed constraints hold resources
        """Free native state (called when the sequence leaves the batch)."""


@dataclass
class _TrieNode:
    children: dict[int, _TrieNode] = field(default_factory=dict)
    end: bool = False


class ChoiceTrie(Constraint):
    """Output exactly one of `choices`, following each choice's canonical tokenization (a prefix trie of ids).

    Where one choice is a prefix of another, the end-of-sequence token is allowed at that point too.
    """

    def __init__(self, choice_ids: Sequence[Sequence[int]], eos_id: int) -> None:
        self.root = _TrieNode()
        for ids in choice_ids:
            if not ids:
                raise BadRequest("a choice tokenizes to nothing")
            node = self.root
            for t in ids:
                node = node.children.setdefault(int(t), _TrieNode())
            node.end = True
        self.node = self.root
        self.eos_id = eos_id
        self._done = False

    def mask_logits(self, logits: np.ndarray) -> np.ndarray:
        allowed = list(self.node.children)
        if self.node.end:
            allowed.append(self.eos_id)
        out = np.full_like(logits, -np.inf)
        out[allowed] = logits[allowed]
        return out

    def accept(self, token: int) -> None:
        if token == self.eos_id and self.node.end:
            self._done = True
            return
        self.node = self.node.children[token]
        if self.node.end and not self.node.children:
            self._done = True

    @property
    def complete(self) -> bool:
        return self._done

    def forced(self) -> list[int]:
        out, node = [], self.node
        while not node.end and len(node.children) == 1:
            (t, node), = node.children.items()
            out.append(t)
        return out


def log_softmax_at(logits: np.ndarray, token: int) -> float:
    finite = logits[np.isfinite(logits)]
    m = float(finite.max())
    return float(logits[token] - m - np.log(np.exp(finite - m).sum()))


def sample_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Greedy when temperature == 0, else temperature + nucleus sampling with the sequence's own RNG."""
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    z -= z[np.isfinite(z)].max()
    p = np.exp(z)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, top_p)) + 1]  # smallest set whose mass reaches top_p
        q = p[keep] / p[keep].sum()
        return int(keep[rng.choice(len(keep), p=q)])
    return int(rng.choice(len(p), p=p))


class StopMatcher:
    """Releases generated text as soon as it cannot be the start of a stop string; cuts at the first stop."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = list(stops)
        self.buf = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit now, whether a stop string was hit)."""
        self.buf += text
        if not self.stops:
            out, self.buf = self.buf, ""
            return out, False
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buf = self.buf[: min(hits)], ""
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buf)), hold, -1):
                if self.buf.endswith(s[:k]):
                    hold = k
                    break
        cut = len(self.buf) - hold
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out, False

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


class Detokenizer:
    """Turns one token at a time into text; "" while a UTF-8 character is still incomplete."""

    def add(self, token: int) -> str:
        raise NotImplementedError


@dataclass
class Step:
    """What one sampled token produced for the consumer."""

    token: int
    text: str
    logprob: float | None  # None for a token the constraint forced (no logits were computed for it)
    finish_reason: str | None  # "stop" | "length" | None


class SequenceSampler:
    """All per-sequence decoding state except the KV cache."""

    def __init__(
        self,
        params: SamplingParams,
        detok: Detokenizer,
        is_eos: Callable[[int], bool],
        constraint: Constraint | None,
        max_new_tokens: int,
    ) -> None:
        self.params = params
        self.detok = detok
        self.is_eos = is_eos
        self.constraint = constraint
        self.max_new = min(params.max_tokens, max_new_tokens)
        self.rng = np.random.default_rng(params.seed)
        self.stop = StopMatcher(params.stop)
        self.generated = 0

    def step(self, logits: np.ndarray) -> Step:
        raw = np.asarray(logits, dtype=np.float32)
        masked = self.constraint.mask_logits(raw) if self.constraint else raw
        if not np.isfinite(masked).any():
            raise BadRequest("the constraint allows no token at this point (grammar cannot be satisfied)")
        tok = sample_token(masked, self.params.temperature, self.params.top_p, self.rng)
        logprob = log_softmax_at(raw, tok)
        self.generated += 1
        if self.constraint:
            self.constraint.accept(tok)
        return self._after(tok, logprob)

    def fast_forward(self) -> list[Step]:
        """The tokens the constraint forces next, taken as if sampled (the same text, stop and length rules),
        up to the first that finishes the sequence."""
        out: list[Step] = []
        if self.constraint is None:
            return out
        for tok in self.constraint.forced():
            if self.is_eos(tok):  # the end is decided by sampling, which also frees the slot
                break
            self.generated += 1
            self.constraint.accept(tok)
            out.append(st := self._after(tok, None))
            if st.finish_reason is not None:
                break
        return out

    def _after(self, tok: int, logprob: float | None) -> Step:
        if self.is_eos(tok):
            return Step(tok, self.stop.flush(), logprob, "stop")
        text, hit = self.stop.feed(self.detok.add(tok))
        if hit or (self.constraint is not None and self.constraint.complete):
            return Step(tok, text + ("" if hit else self.stop.flush()), logprob, "stop")
        if self.generated >= self.max_new:
            return Step(tok, text + self.stop.flush(), logprob, "length")
        return Step(tok, text, logprob, None)

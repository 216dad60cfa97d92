"""Lark grammars enforced with llguidance: a token mask computed per step from our own sampling loop.

llguidance's Lark dialect has parametric rules with a 64-bit bitset per rule invocation (`set_bit`, `bit_clear`,
`is_ones`, `bit_count_lt`), so "each of these phrases at most once, in any order" is one static grammar. Both
backends use it: llama.cpp builds the llguidance tokenizer from the GGUF vocab, transformers from its fast
tokenizer. The matcher never raises; errors are read with `is_error()` and turned into a clear BadRequest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engines.errors import BadRequest, ModelError
from engines.llm.sampling import Constraint


def load_llguidance() -> Any:
    try:
        import llguidance
        import llguidance.numpy  # noqa: F401 - the bitmask helpers live in this submodule
    except ImportError:
        raise ModelError("llguidance is not installed (pip install llguidance==1.9.1)") from None
    return llguidance


def compile_lark(tokenizer: Any, lark: str) -> Any:
    """A matcher for `lark` over `tokenizer` (an llguidance.LLTokenizer); a BadRequest if it does not compile."""
    llg = load_llguidance()
    matcher = llg.LLMatcher(tokenizer, llg.LLMatcher.grammar_from_lark(lark), log_level=0)
    if matcher.is_error():
        raise BadRequest(f"the grammar could not be compiled: {matcher.get_error()}")
    return matcher


class LarkConstraint(Constraint):
    """One sequence's llguidance matcher: forbidden tokens get -inf, the matcher advances on every token."""

    def __init__(self, tokenizer: Any, lark: str) -> None:
        llg = load_llguidance()
        self.matcher = compile_lark(tokenizer, lark)
        self.n_vocab = int(tokenizer.vocab_size)
        self._np = llg.numpy
        self._bitmask = llg.numpy.allocate_token_bitmask(1, self.n_vocab)

    def mask_logits(self, logits: np.ndarray) -> np.ndarray:
        self._np.fill_next_token_bitmask(self.matcher, self._bitmask, 0)
        allowed = np.unpackbits(self._bitmask[0].view(np.uint8), bitorder="little").astype(bool)
        out = np.full_like(logits, -np.inf)
        n = min(len(logits), self.n_vocab, len(allowed))  # model heads may be padded past the tokenizer's vocab
        keep = np.flatnonzero(allowed[:n])
        out[keep] = logits[keep]
        return out

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            raise BadRequest(f"the grammar rejected a token: {self.matcher.get_error() or 'not allowed here'}")

    def forced(self) -> list[int]:
        # the bytes the grammar allows as the only continuation, tokenized canonically by llguidance (which holds
        # back a last token that a longer one could still replace); unconstrained sampling might split them
        # otherwise, but it can produce no other text
        return list(self.matcher.compute_ff_tokens())

    @property
    def complete(self) -> bool:
        return bool(self.matcher.is_stopped())

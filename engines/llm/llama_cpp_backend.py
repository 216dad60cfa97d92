"""llama.cpp runtime (llama-cpp-python low-level API): GGUF models, soft tokens, continuous batching, grammars.

One llama context holds `max_num_seqs` sequences, each with its own seq_id and `n_ctx` KV cells (the context is
created with n_ctx * max_num_seqs cells and a non-unified KV cache, so one long sequence can never starve the
others). Soft tokens go in through `llama_batch.embd`; a batch is either tokens or embeddings, so a prompt is
prefilled as consecutive batches with consecutive positions. Each decode step sends one token per running
sequence in a single `llama_decode`.

Prefix caching: `prefix_cache_slots` extra sequences (ids max_num_seqs...) hold the KV of recent prompts. With
per-sequence KV streams llama.cpp can copy only a whole stream between sequences (`llama_memory_seq_cp` with
p0 = p1 = -1; the buffer copy runs at the start of the next `llama_decode`, in the order the copies were asked
for), so a hit copies the cached stream into the new sequence and removes the cells past the reused prefix; the
prompt is cached the same way once it is prefilled. Only the leading text tokens of a prompt are cached, and
they are reused up to a prefill-batch boundary (see `_reuse_prefix`), which keeps outputs bit-identical.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import BadRequest, ModelError
from engines.llm.base import SamplingParams
from engines.llm.batching import BatchedBackend, Seq
from engines.llm.gguf_embeddings import GGUFEmbeddings
from engines.llm.llama_cpp_lib import llama_cpp_module
from engines.llm.prefix_cache import Entry, PrefixCache
from engines.llm.sampling import Constraint, Detokenizer

log = logging.getLogger(__name__)

_N_BATCH = 512  # tokens per llama_decode call during prefill
# llama_flash_attn_type (llama.h); auto turns it on wherever the backend supports it, the CPU included
_FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


class _ByteDetokenizer(Detokenizer):
    def __init__(self, backend: LlamaCppBackend) -> None:
        self.backend = backend
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token: int) -> str:
        return self.utf8.decode(self.backend._piece(token))


class LlamaGrammarConstraint(Constraint):
    """A GBNF grammar enforced by llama.cpp's grammar sampler, one sampler (parser state) per sequence."""

    def __init__(self, backend: LlamaCppBackend, gbnf: str) -> None:
        L = backend.lib
        self.L = L
        self.smpl = L.llama_sampler_init_grammar(backend.vocab, gbnf.encode(), b"root")
        if not self.smpl:
            raise BadRequest("the grammar could not be parsed (llama.cpp GBNF syntax expected, rule 'root')")
        n = backend.vocab_size
        self._data = (L.llama_token_data * n)()
        self._view = np.ctypeslib.as_array(self._data)  # structured: id, logit, p
        self._view["id"] = np.arange(n, dtype=np.int32)
        self._arr = L.llama_token_data_array(data=self._data, size=n, selected=-1, sorted=False)

    def mask_logits(self, logits: np.ndarray) -> np.ndarray:
        n = len(self._view)
        self._view["id"] = np.arange(n, dtype=np.int32)
        self._view["logit"] = logits
        self._view["p"] = 0.0
        self._arr.size, self._arr.selected, self._arr.sorted = n, -1, False
        self.L.llama_sampler_apply(self.smpl, ctypes.byref(self._arr))
        out = np.empty_like(logits)
        out[self._view["id"]] = self._view["logit"]
        return out

    def accept(self, token: int) -> None:
        self.L.llama_sampler_accept(self.smpl, int(token))

    def close(self) -> None:
        if self.smpl:
            self.L.llama_sampler_free(self.smpl)
            self.smpl = None

    def __del__(self) -> None:
        self.close()


class LlamaCppBackend(BatchedBackend):
    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        n_threads_batch: int | None = None,
        max_num_seqs: int = 8,
        device: str = "cpu",
        prefix_cache_slots: int = 0,
        prefix_min_tokens: int = 64,
        flash_attn: str = "auto",
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"GGUF model file not found: {path.name}")
        if prefix_cache_slots < 0:
            raise ModelError("prefix_cache_slots must be 0 (off) or more")
        if flash_attn not in _FLASH_ATTN:
            raise ModelError(f"flash_attn must be one of {', '.join(_FLASH_ATTN)}, not {flash_attn!r}")
        L = self.lib = llama_cpp_module()
        if device != "cpu" and not L.llama_supports_gpu_offload():
            raise ModelError(f"this llama-cpp-python build has no GPU support; device={device!r} is unavailable")
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0 if device == "cpu" else -1  # a CUDA build offloads every layer when asked
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise ModelError(f"llama.cpp could not load {path.name} (not a GGUF model it supports?)")
        cp = L.llama_context_default_params()
        n_seq = max_num_seqs + prefix_cache_slots
        cp.n_ctx = n_ctx * n_seq
        cp.n_batch = cp.n_ubatch = max(_N_BATCH, max_num_seqs)
        cp.n_seq_max = n_seq
        # Threads per llama_decode, chosen by what the batch is (_use_threads): a step of one sequence (one sampled
        # token, or the few tokens a grammar forces) on n_threads, a prompt chunk or a step of several sequences
        # on n_threads_batch. llama.cpp's own split (one token vs more) would put forced runs on the batch threads.
        self.n_threads, self.n_threads_batch = n_threads, n_threads_batch or n_threads
        cp.n_threads = cp.n_threads_batch = self.n_threads
        self._threads = self.n_threads
        cp.kv_unified = False  # each sequence gets its own n_ctx cells
        cp.flash_attn_type = _FLASH_ATTN[flash_attn]
        self.flash_attn = flash_attn
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            L.llama_model_free(self.model)
            raise ModelError("llama.cpp could not create a context (out of memory for the KV cache?)")
        self.mem = L.llama_get_memory(self.ctx)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.vocab_size = L.llama_vocab_n_tokens(self.vocab)
        self.hidden_size = L.llama_model_n_embd(self.model)
        self.eos_id = L.llama_vocab_eos(self.vocab)
        self.arch = self._meta("general.architecture")
        self.path = path
        self.model_bytes = L.llama_model_size(self.model)
        self.name = f"llama_cpp:{path.stem}"
        super().__init__(max_num_seqs, min(n_ctx, L.llama_n_ctx_seq(self.ctx)))
        self.max_step_tokens = cp.n_batch // max_num_seqs  # a full batch of them still fits one llama_batch
        self._tok_batch = L.llama_batch_init(cp.n_batch, 0, 1)
        self._emb_batch = L.llama_batch_init(cp.n_batch, self.hidden_size, 1)
        self._embd = GGUFEmbeddings(path)  # memory-mapped token_embd rows for embed_tokens
        if self._embd.hidden != self.hidden_size:
            raise ModelError("token_embd width does not match the model's n_embd")
        self._pieces: dict[int, bytes] = {}
        self._llg_tokenizer: Any = None
        slots = range(max_num_seqs, n_seq)
        self._prefix = PrefixCache(slots, prefix_min_tokens, self._aligned) if prefix_cache_slots else None

    # ---- tokens ------------------------------------------------------------------------------------
    def _meta(self, key: str) -> str:
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else ""

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self.lib.llama_token * cap)()
        # parse_special=True: special-token text (e.g. "<|im_start|>") becomes the special token, as in HF
        n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, True)
        if n < 0:
            cap = -n
            buf = (self.lib.llama_token * cap)()
            n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, True)
        return list(buf[:n])

    def _piece(self, token: int) -> bytes:
        p = self._pieces.get(token)
        if p is None:
            buf = ctypes.create_string_buffer(64)
            n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            p = self._pieces[token] = buf.raw[:n]
        return p

    def detokenize(self, ids: Sequence[int]) -> str:
        return b"".join(self._piece(int(t)) for t in ids).decode("utf-8", errors="replace")

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Rows of the GGUF `token_embd` tensor (dequantized); Gemma's √hidden scaling is applied here because
        llama.cpp does not apply it to embedding input."""
        idx = np.asarray(ids, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.vocab_size):
            raise BadRequest("token id out of range")
        rows = self._embd.rows_f32(idx)
        if self.arch.startswith("gemma"):
            rows = rows * np.float32(math.sqrt(self.hidden_size))
        return rows

    # ---- constraints -------------------------------------------------------------------------------
    def _constraint(self, params: SamplingParams) -> Constraint | None:
        if params.grammar is not None:
            return LlamaGrammarConstraint(self, params.grammar)
        if params.json_schema is not None:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            try:
                gbnf = json_schema_to_gbnf(json.dumps(params.json_schema))
            except Exception as e:
                raise BadRequest(f"json_schema cannot be turned into a grammar: {e}") from None
            return LlamaGrammarConstraint(self, gbnf)
        return super()._constraint(params)

    def _ll_tokenizer(self) -> Any:
        # built from the GGUF vocab itself, so token ids match exactly; it reads the vocab, which the model owns
        if self._llg_tokenizer is None:
            from engines.llm.guidance import load_llguidance

            load_llguidance()
            from llguidance.llamacpp import lltokenizer_from_vocab

            self._llg_tokenizer = lltokenizer_from_vocab(self.vocab)
        return self._llg_tokenizer

    def _detokenizer(self) -> Detokenizer:
        return _ByteDetokenizer(self)

    def _is_eos(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    # ---- engine hooks ------------------------------------------------------------------------------
    def _logits(self, i: int) -> np.ndarray:
        ptr = self.lib.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.vocab_size,)).copy()

    def _use_threads(self, n: int) -> None:
        if n != self._threads:
            self.lib.llama_set_n_threads(self.ctx, n, n)
            self._threads = n

    def _run_batch(self, seq: int, pos0: int, ids: list[int] | None, embd: np.ndarray | None, logits: str) -> None:
        """Decode one chunk for one sequence; `logits` is "last", "all" or "none"."""
        b = self._tok_batch if embd is None else self._emb_batch
        n = len(ids) if embd is None else len(embd)
        if embd is not None:
            ctypes.memmove(b.embd, embd.ctypes.data, embd.nbytes)
        else:
            for i, t in enumerate(ids):
                b.token[i] = t
        for i in range(n):
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits == "all" or (logits == "last" and i == n - 1)
        b.n_tokens = n
        self._use_threads(self.n_threads_batch if n > 1 else self.n_threads)
        self._check(self.lib.llama_decode(self.ctx, b))

    def _check(self, rc: int) -> None:
        if rc == 1:
            raise ModelError("llama.cpp found no free KV cells for this batch")
        if rc != 0:
            raise ModelError(f"llama_decode failed ({rc})")

    def _prefill_chunk(self, seq: Seq, parts: list, pos0: int, last: bool) -> np.ndarray | None:
        pos = pos0
        for k, (kind, data) in enumerate(parts):
            final = last and k == len(parts) - 1
            i = 0
            while i < len(data):
                # batches end at multiples of _N_BATCH in absolute positions (see _reuse_prefix)
                j = min(len(data), i + _N_BATCH - (pos % _N_BATCH))
                piece = data[i:j]
                want = "last" if final and j >= len(data) else "none"
                i = j
                if kind == "ids":
                    self._run_batch(seq.slot, pos, list(piece), None, want)
                else:
                    self._run_batch(seq.slot, pos, None, np.ascontiguousarray(piece, dtype=np.float32), want)
                pos += len(piece)
        return self._logits(-1) if last else None

    def _decode(self, seqs: list[Seq]) -> list[np.ndarray]:
        b = self._tok_batch
        i = 0
        last = []
        for s in seqs:  # each sequence's step tokens in a row, logits after its last one only
            for j, t in enumerate(s.step_tokens):
                b.token[i] = t
                b.pos[i] = s.pos + j
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = s.slot
                b.logits[i] = j == len(s.step_tokens) - 1
                i += 1
            last.append(i - 1)
        b.n_tokens = i
        self._use_threads(self.n_threads_batch if len(seqs) > 1 else self.n_threads)
        self._check(self.lib.llama_decode(self.ctx, b))
        return [self._logits(k) for k in last]

    @staticmethod
    def _lead(seq: Seq) -> tuple[list[int], list[int]]:
        """The prompt's leading text (its token parts before any soft tokens), and where each of those parts ends."""
        tokens: list[int] = []
        cuts: list[int] = []
        for kind, data in seq.parts:
            if kind != "ids":
                break
            tokens += data
            cuts.append(len(tokens))
        return tokens, cuts

    def _aligned(self, m: int) -> int:
        """The last position <= m where every prefill starts a batch: prefill chunks start at multiples of
        prefill_chunk (engines/llm/batching.py) and batches at multiples of _N_BATCH (`_prefill_chunk`)."""
        return max(m // self.prefill_chunk * self.prefill_chunk, m // _N_BATCH * _N_BATCH)

    def _reuse_prefix(self, seq: Seq) -> int:
        if self._prefix is None or seq.parts[0][0] != "ids":
            return 0
        tokens, cuts = self._lead(seq)
        # llama.cpp's numerics depend on batch shapes (a 1-row batch takes gemv kernels, other row counts other
        # tilings), so a prefix is reused only up to where a prefill without the cache starts a batch as well, and
        # only from a prompt whose batches were cut alike before it (PrefixCache.reusable): every later token is
        # then computed exactly as without the cache and outputs stay bit-identical. The last prompt token is
        # always prefilled: its logits are needed.
        entry, n = self._prefix.reusable(tokens, cuts, seq.n_prompt - 1)
        return self._hit(seq, entry, n)

    def _hit(self, seq: Seq, entry: Entry | None, n: int) -> int:
        assert self._prefix is not None
        if not self._prefix.use(entry, n):
            return 0
        self.lib.llama_memory_seq_cp(self.mem, entry.slot, seq.slot, -1, -1)  # whole stream (see the docstring)
        self.lib.llama_memory_seq_rm(self.mem, seq.slot, n, -1)
        return n

    def _prompt_done(self, seq: Seq) -> None:
        if self._prefix is None or seq.parts[0][0] != "ids":
            return
        tokens, cuts = self._lead(seq)
        slot = self._prefix.place(tokens, cuts)
        if slot is not None:  # the cache slot's old cells are dropped by the copy; keep only the text prefix
            self.lib.llama_memory_seq_cp(self.mem, seq.slot, slot, -1, -1)
            self.lib.llama_memory_seq_rm(self.mem, slot, len(tokens), -1)

    def stats(self) -> dict[str, int]:
        out = super().stats()
        if self._prefix is not None:
            out.update(self._prefix.stats())
        return out

    def _release(self, seq: Seq) -> None:
        if seq.slot >= 0:
            self.lib.llama_memory_seq_rm(self.mem, seq.slot, -1, -1)
        if seq.sampler is not None and seq.sampler.constraint is not None:
            seq.sampler.constraint.close()

    def _score(self, seq: Seq, first: np.ndarray) -> list[float]:
        n = seq.n_prompt
        out = []
        for ids in seq.choices or []:
            lp = _logprob(first, ids[0])
            if len(ids) > 1:
                self._run_batch(seq.slot, n, ids[:-1], None, "all")
                for j, t in enumerate(ids[1:]):
                    lp += _logprob(self._logits(j), t)
                self.lib.llama_memory_seq_rm(self.mem, seq.slot, n, -1)  # back to just the prompt
            out.append(lp)
        return out

    def close(self) -> bool:
        if not super().close():
            return False  # the engine thread may still be inside llama_decode: keep the context alive
        L = self.lib
        if getattr(self, "ctx", None):
            L.llama_batch_free(self._tok_batch)
            L.llama_batch_free(self._emb_batch)
            L.llama_free(self.ctx)
            L.llama_model_free(self.model)
            self.ctx = self.model = None
        return True


def _logprob(logits: np.ndarray, token: int) -> float:
    m = float(logits.max())
    return float(logits[token] - m - math.log(float(np.exp(logits - m).sum())))

"""transformers runtime: any causal-LM dir or GGUF file, soft tokens as `inputs_embeds`, batched decoding.

Batching: each new sequence is prefilled alone (batch 1, its own DynamicCache); between decode steps the running
sequences share one left-padded batched KV cache with an attention mask and per-row position ids. Whenever the
set of running sequences changes (a sequence joins or leaves) the batched cache is rebuilt from the rows' valid
slices ("join at step boundary by re-batching"), so steps in between just append one column per step.

Quantization: int8 on CPU with `torch.ao.quantization.quantize_dynamic` (Linear layers, qint8, block by block in
place); on CUDA, int8/int4 through bitsandbytes or torchao when installed. `choices` and Lark grammars (llguidance
over the fast tokenizer) are enforced here; GBNF grammars and JSON schemas raise `UnsupportedConstraint` (use
llama_cpp).
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import BadRequest, ModelError
from engines.llm.base import SamplingParams
from engines.llm.batching import BatchedBackend, Seq
from engines.llm.sampling import Constraint, Detokenizer, UnsupportedConstraint

log = logging.getLogger(__name__)

_DTYPES = {"float32", "bfloat16", "float16"}


class _IncrementalDetokenizer(Detokenizer):
    """Decodes a sliding window of ids and emits only the new suffix (handles SentencePiece spaces and
    multi-token UTF-8 characters)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        text = self.tok.decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return text[len(before) :]
        return ""


def _torch():  # noqa: ANN202
    import torch

    return torch


def dequantized_copy(gguf: Path, cache_dir: Path) -> Path:
    """A Hugging Face dir holding the GGUF's weights dequantized to fp32 (made once, reused afterwards).

    transformers refuses to `save_pretrained` a GGUF-loaded model, so the weights go into a model rebuilt from
    the config without its `quantization_config`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    st = gguf.stat()
    out = Path(cache_dir) / f"{gguf.stem}-{st.st_size}-{int(st.st_mtime)}"
    if (out / "config.json").is_file():
        return out
    torch = _torch()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
    cfg = m.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    clean = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    clean.load_state_dict(m.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".partial-"))
    clean.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class TransformersBackend(BatchedBackend):
    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        quantization: str = "none",
        n_ctx: int = 2048,
        n_threads: int = 2,
        max_num_seqs: int = 8,
        cache_dir: Path | None = None,
    ) -> None:
        torch = _torch()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        on_cuda = _check_settings(device, dtype, quantization)
        if device == "cpu":
            torch.set_num_threads(n_threads)

        path = Path(path)
        gguf_kw: dict[str, Any] = {}
        src = path
        if path.suffix == ".gguf":
            if cache_dir is not None or (on_cuda and quantization != "none"):
                src = dequantized_copy(path, cache_dir or Path(tempfile.mkdtemp(prefix="xemo-llm-")))
            else:
                src, gguf_kw = path.parent, {"gguf_file": path.name}
        elif not (path / "config.json").is_file():
            raise ModelError(f"{path.name} is neither a .gguf file nor a Hugging Face model dir (no config.json)")

        torch_dtype = getattr(torch, dtype)
        load_kw: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True, **gguf_kw}
        post_quant = None
        if on_cuda and quantization != "none":
            load_kw, post_quant = _cuda_quantization(quantization, torch_dtype, load_kw)
        try:
            tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True, **gguf_kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = AutoModelForCausalLM.from_pretrained(src, **load_kw)
        except (OSError, ValueError) as e:
            raise ModelError(f"transformers could not load {path.name}: {e}") from None
        if "quantization_config" not in load_kw:
            model = model.to(device)
        model.eval()
        if post_quant is not None:
            post_quant(model)
        self._serve(model, tokenizer, path.stem if path.suffix == ".gguf" else path.name, device, torch_dtype,
                    quantization, n_ctx, max_num_seqs)

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        name: str,
        *,
        device: str = "cpu",
        quantization: str = "none",
        n_ctx: int = 2048,
        n_threads: int = 2,
        max_num_seqs: int = 8,
    ) -> TransformersBackend:
        """Serve a causal LM built in memory, in the dtype it has (bench/gpu_xemogpt.py builds full-size models
        from their configs, where writing and reloading 8-16 GB of random weights would only cost time).
        int8 on CPU is applied here as for a loaded model; a bfloat16 model goes to int8 block by block."""
        torch = _torch()
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        name_of = "float32" if quantization == "int8" else str(dtype).removeprefix("torch.")
        on_cuda = _check_settings(device, name_of, quantization)
        if device == "cpu":
            torch.set_num_threads(n_threads)
        model = model.to(device).eval()
        if on_cuda and quantization != "none":
            _torchao_quantization(quantization)(model)
        self = cls.__new__(cls)
        self._serve(model, tokenizer, name, device, torch.float32 if quantization == "int8" and not on_cuda else dtype,
                    quantization, n_ctx, max_num_seqs)
        return self

    def _serve(self, model: Any, tokenizer: Any, name: str, device: str, dtype: Any, quantization: str, n_ctx: int,
               max_num_seqs: int) -> None:
        """Everything after the weights are in place (and quantized on CUDA): the one setup both entries share."""
        torch = _torch()
        if quantization == "int8" and device == "cpu":
            model = quantize_int8_cpu(model)
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.quantization = quantization
        cfg = model.config.get_text_config()
        self.hidden_size = int(cfg.hidden_size)
        self.vocab_size = int(cfg.vocab_size)
        eos: set[int] = set()
        for v in (self.tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            if isinstance(v, int):
                eos.add(v)
            elif isinstance(v, list | tuple):
                eos.update(int(x) for x in v)
        if not eos:
            raise ModelError("the model defines no end-of-sequence token")
        self._eos = eos
        self.eos_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else min(eos)
        self.name = f"transformers:{name}" + (f":{quantization}" if quantization != "none" else "")
        self.model_bytes = weight_bytes(model)
        max_pos = getattr(cfg, "max_position_embeddings", None) or n_ctx
        super().__init__(max_num_seqs, min(n_ctx, int(max_pos)))
        # batched KV state (engine thread only)
        self._rows: list[Seq] = []
        self._llg_tokenizer: Any = None
        self._cache: Any = None
        self._mask: Any = None

    # ---- tokens ------------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        torch = _torch()
        idx = torch.as_tensor(list(ids), dtype=torch.long, device=self.device)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.vocab_size):
            raise BadRequest("token id out of range")
        with torch.inference_mode():
            # the model's own embedding module, so model-specific scaling (Gemma's √hidden) is included
            return self.model.get_input_embeddings()(idx).float().cpu().numpy()

    def _constraint(self, params: SamplingParams) -> Constraint | None:
        if params.grammar is not None or params.json_schema is not None:
            raise UnsupportedConstraint(
                "the transformers backend enforces `choices` and `lark`; grammar and json_schema need llama_cpp"
            )
        return super()._constraint(params)

    def _ll_tokenizer(self) -> Any:
        if self._llg_tokenizer is None:
            from engines.llm.guidance import load_llguidance

            load_llguidance()
            import llguidance.hf

            if not getattr(self.tokenizer, "is_fast", False):
                raise UnsupportedConstraint("Lark grammars need a fast (tokenizers) tokenizer on transformers")
            self._llg_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size,
                                                               eos_token=sorted(self._eos))
        return self._llg_tokenizer

    def _detokenizer(self) -> Detokenizer:
        return _IncrementalDetokenizer(self.tokenizer)

    def _is_eos(self, token: int) -> bool:
        return token in self._eos

    # ---- engine hooks ------------------------------------------------------------------------------
    def _embeds(self, parts: list) -> Any:
        torch = _torch()
        emb = self.model.get_input_embeddings()
        chunks = []
        for kind, data in parts:
            if kind == "ids":
                chunks.append(emb(torch.as_tensor(data, dtype=torch.long, device=self.device)))
            else:
                chunks.append(torch.from_numpy(data).to(device=self.device, dtype=self.dtype))
        return torch.cat(chunks).unsqueeze(0).to(self.dtype)

    def _prefill_chunk(self, seq: Seq, parts: list, pos0: int, last: bool) -> np.ndarray | None:
        from transformers import DynamicCache

        torch = _torch()
        cache = seq.state.setdefault("cache", DynamicCache())  # this sequence alone, until the prompt is in
        with torch.inference_mode():
            x = self._embeds(parts)
            pos = torch.arange(pos0, pos0 + x.shape[1], device=self.device).unsqueeze(0)
            out = self.model(inputs_embeds=x, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
        if not last:
            return None
        if seq.choices is None:  # hand the rows to the batched cache at the next decode step
            seq.state["kv"] = [(layer.keys, layer.values) for layer in seq.state.pop("cache").layers]
        return out.logits[0, -1].float().cpu().numpy()

    def _rebatch(self, seqs: list[Seq]) -> None:
        """Rebuild the left-padded batched cache for exactly `seqs` (in this order)."""
        from transformers import DynamicCache

        torch = _torch()
        rows: list[list[tuple[Any, Any]]] = []
        for s in seqs:
            if s in self._rows:
                r = self._rows.index(s)
                valid = int(self._mask[r].sum())
                rows.append([(k[r : r + 1, :, -valid:], v[r : r + 1, :, -valid:]) for k, v in self._layers()])
            else:
                rows.append(s.state.pop("kv"))
        lengths = [row[0][0].shape[2] for row in rows]
        T = max(lengths)
        cache = DynamicCache()
        for li in range(len(rows[0])):
            ks, vs = [], []
            for row, n in zip(rows, lengths, strict=True):
                k, v = row[li]
                if n < T:
                    pad = (0, 0, T - n, 0)  # left-pad the sequence axis
                    k, v = torch.nn.functional.pad(k, pad), torch.nn.functional.pad(v, pad)
                ks.append(k)
                vs.append(v)
            cache.update(torch.cat(ks), torch.cat(vs), li)
        mask = torch.zeros(len(seqs), T, dtype=torch.long, device=self.device)
        for i, n in enumerate(lengths):
            mask[i, T - n :] = 1
        self._rows, self._cache, self._mask = list(seqs), cache, mask

    def _layers(self) -> list[tuple[Any, Any]]:
        return [(layer.keys, layer.values) for layer in self._cache.layers]

    def _decode(self, seqs: list[Seq]) -> list[np.ndarray]:
        torch = _torch()
        with torch.inference_mode():
            if seqs != self._rows:
                self._rebatch(seqs)
            ids = torch.tensor([[s.step_tokens[0]] for s in seqs], device=self.device)  # max_step_tokens = 1
            pos = torch.tensor([[s.pos] for s in seqs], device=self.device)
            mask = torch.cat([self._mask, torch.ones(len(seqs), 1, dtype=torch.long, device=self.device)], 1)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self._cache, use_cache=True)
            self._mask = mask
            logits = out.logits[:, -1].float().cpu().numpy()
        return list(logits)

    def _release(self, seq: Seq) -> None:
        seq.state.pop("kv", None)
        seq.state.pop("cache", None)
        if seq in self._rows and len(self._rows) == 1:
            self._rows, self._cache, self._mask = [], None, None  # nothing left: drop the batch cache now
        # otherwise the row is dropped when the next step rebuilds the batch without it

    def _score(self, seq: Seq, first: np.ndarray) -> list[float]:
        torch = _torch()
        n = seq.n_prompt
        cache = seq.state["cache"]
        first_lp = torch.log_softmax(torch.from_numpy(first).double(), -1)
        out = []
        with torch.inference_mode():
            for ids in seq.choices or []:
                lp = float(first_lp[ids[0]])
                if len(ids) > 1:
                    x = torch.tensor([ids[:-1]], device=self.device)
                    pos = torch.arange(n, n + len(ids) - 1, device=self.device).unsqueeze(0)
                    logits = self.model(input_ids=x, position_ids=pos, cache=cache, use_cache=True).logits[0]
                    lps = torch.log_softmax(logits.double(), -1)
                    lp += float(sum(lps[j, t] for j, t in enumerate(ids[1:])))
                    cache.crop(-(len(ids) - 1))  # back to just the prompt (negative = tokens to remove)
                out.append(lp)
        return out


def weight_bytes(model: Any) -> int:
    """Bytes of the weights (int8 dynamic-quantized Linear layers counted at one byte per weight)."""
    torch = _torch()
    total = 0
    seen: set[int] = set()
    for mod in model.modules():
        if isinstance(mod, torch.ao.nn.quantized.dynamic.Linear):
            w = mod.weight()
            total += w.numel() * w.element_size()
            b = mod.bias()
            total += 0 if b is None else b.numel() * b.element_size()
        else:
            for p in mod.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel() * p.element_size()
    return total


def _check_settings(device: str, dtype: str, quantization: str) -> bool:
    """Refuse settings that cannot work, before any weights are touched; True when serving on CUDA."""
    torch = _torch()
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}: use one of {sorted(_DTYPES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device={device!r} requested but this torch build sees no CUDA device")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ModelError(f"unknown device {device!r}: use cpu or cuda")
    on_cuda = device.startswith("cuda")
    if quantization == "int4" and not on_cuda:
        raise ModelError("int4 weights need CUDA (bitsandbytes or torchao); on CPU use int8 or a GGUF on llama_cpp")
    if quantization == "int8" and not on_cuda and dtype != "float32":
        raise ModelError("int8 dynamic quantization on CPU runs with float32 activations: set dtype float32")
    return on_cuda


def quantize_int8_cpu(model: Any) -> Any:
    """int8 dynamic quantization of every Linear (qint8 weights, float32 activations), in place and one block of a
    ModuleList at a time: a model held in bfloat16 is never whole in float32 on the way (Qwen3-4B: 8 GB, not 16 GB
    plus the copy quantize_dynamic makes by default). For a float32 model the result is the same as one
    quantize_dynamic call."""
    torch = _torch()
    blocks = [b for mod in model.modules() if isinstance(mod, torch.nn.ModuleList) for b in mod]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in favour of torchao, still supported in 2.13
        for block in blocks:
            block.float()
            torch.ao.quantization.quantize_dynamic(block, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
            # the swapped-out float32 Linears sit in reference cycles: without this they pile up until the end
            # (Qwen3-4B from bfloat16 grew past 15 GB instead of shrinking to under 6 GB)
            gc.collect()
        model.float()  # what is left: embeddings, norms, the LM head
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def _cuda_quantization(quantization: str, torch_dtype: Any, load_kw: dict[str, Any]) -> tuple[dict, Any]:
    """bitsandbytes at load time if installed, else torchao after load; a clear error if neither is."""
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig

        if quantization == "int8":
            qc = BitsAndBytesConfig(load_in_8bit=True)
        else:
            qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch_dtype, bnb_4bit_quant_type="nf4")
        return {**load_kw, "quantization_config": qc, "device_map": "cuda"}, None
    except ImportError:
        pass
    return load_kw, _torchao_quantization(quantization, "bitsandbytes or torchao")


def _torchao_quantization(quantization: str, needs: str = "torchao") -> Any:
    """torchao's weight-only int8/int4 as a function applied to a loaded model."""
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise ModelError(f"{quantization} on CUDA needs {needs}; install it, or use quantization none") from None
    cfg = Int8WeightOnlyConfig() if quantization == "int8" else Int4WeightOnlyConfig()
    return lambda m: quantize_(m, cfg)

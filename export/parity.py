"""Parity of an exported graph with the PyTorch front end it came from, over several batch sizes and lengths.

Cases cover batch 1, 3 and 8 and, for audio, mixed lengths padded into one batch (the masking path) and a
longer time axis than the one traced. Audio tokens are compared on valid frames only; the validity masks must
match exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from export.onnx_export import AUDIO_MIN_SAMPLES, VIDEO, GraphSpec

Inputs = dict[str, np.ndarray]
GraphFn = Callable[[Inputs], list[np.ndarray]]

BATCHES = (1, 3, 8)


@dataclass
class ParityRow:
    graph: str
    case: str
    batch: int
    shape: str  # of the first input
    max_abs: float
    one_minus_cos: float  # worst token
    masks_equal: bool
    passed: bool
    error: str = ""  # the candidate raised instead of answering (e.g. a shape the graph cannot take)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cases(spec: GraphSpec, sample_rate: int = 16000, seed: int = 0) -> list[tuple[str, Inputs]]:
    """Named input sets for one graph (deterministic)."""
    rng = np.random.default_rng(seed)
    if spec.name == VIDEO:
        _, f, c, h, w = spec.inputs[0].shape
        return [
            (f"batch{b}", {"pixel_values": rng.standard_normal((b, f, c, h, w), dtype=np.float32)})
            for b in BATCHES
            if b <= spec.max_batch
        ]
    sr = sample_rate
    lengths: list[tuple[str, list[int]]] = [
        ("batch1", [sr]),
        ("batch3-mixed", [2 * sr, int(1.3 * sr), int(0.6 * sr)]),
        ("batch8-mixed", [int(sr * s) for s in (3.0, 0.4, 1.7, 2.2, 0.9, 3.0, 1.25, 2.6)]),
        ("batch1-long", [int(4.5 * sr)]),
    ]
    out = []
    for name, lens in lengths:
        lens = [max(AUDIO_MIN_SAMPLES, min(n, spec.max_samples)) for n in lens]
        if len(lens) > spec.max_batch:
            continue
        t = max(lens)
        x = np.zeros((len(lens), t), np.float32)
        mask = np.zeros((len(lens), t), np.int64)
        for i, n in enumerate(lens):
            wave = rng.standard_normal(n).astype(np.float32)
            x[i, :n] = (wave - wave.mean()) / (wave.std() + 1e-7)  # what the feature extractor's normalisation does
            mask[i, :n] = 1
        out.append((name, {"input_values": x, "attention_mask": mask}))
    return out


def compare(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> tuple[float, float, bool]:
    """(max |ref - got|, worst per-token 1 - cosine, masks equal) over valid tokens."""
    ref_tok, got_tok = np.asarray(ref[0], np.float64), np.asarray(got[0], np.float64)
    if ref_tok.shape != got_tok.shape:
        return float("inf"), float("inf"), False
    masks_equal = True
    if len(ref) > 1:  # audio: (tokens, valid)
        rv, gv = np.asarray(ref[1]).astype(bool), np.asarray(got[1]).astype(bool)
        masks_equal = rv.shape == gv.shape and bool((rv == gv).all())
        if not masks_equal:
            return float("inf"), float("inf"), False
        ref_tok, got_tok = ref_tok[rv], got_tok[rv]
    ref_tok = ref_tok.reshape(-1, ref_tok.shape[-1])
    got_tok = got_tok.reshape(-1, got_tok.shape[-1])
    if ref_tok.size == 0:
        return 0.0, 0.0, masks_equal
    max_abs = float(np.abs(ref_tok - got_tok).max())
    num = (ref_tok * got_tok).sum(-1)
    den = np.linalg.norm(ref_tok, axis=-1) * np.linalg.norm(got_tok, axis=-1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
    return max_abs, float(max(0.0, (1.0 - cos).max())), masks_equal


def check(
    spec: GraphSpec,
    reference: GraphFn,
    candidate: GraphFn,
    atol: float,
    cos_tol: float,
    sample_rate: int = 16000,
    on_case: Callable[[str], None] | None = None,
) -> list[ParityRow]:
    rows = []
    for name, inputs in cases(spec, sample_rate):
        ref = reference(inputs)
        first = next(iter(inputs.values()))
        shape = "x".join(map(str, first.shape))
        try:
            got = candidate(inputs)
        except Exception as e:  # a runtime error at this shape is a parity failure, reported, not a crash
            max_abs, omc, masks_equal = float("inf"), float("inf"), False
            error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        else:
            max_abs, omc, masks_equal = compare(ref, got)
            error = ""
        passed = masks_equal and max_abs <= atol and omc <= cos_tol
        rows.append(ParityRow(spec.name, name, first.shape[0], shape, max_abs, omc, masks_equal, passed, error))
        if on_case:
            on_case(name)
    return rows


def torch_fn(module: Any) -> GraphFn:
    """Run a torch front end on numpy inputs, returning numpy outputs (the parity reference)."""
    import torch

    def run(inputs: Inputs) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(v) for v in inputs.values()))
        outs = out if isinstance(out, tuple | list) else (out,)
        return [o.detach().cpu().numpy() for o in outs]

    return run


def format_table(rows: Sequence[ParityRow]) -> str:
    lines = ["graph  case           input shape             max|diff|   1-cos      ok"]
    for r in rows:
        lines.append(
            f"{r.graph:<6} {r.case:<14} {r.shape:<23} {r.max_abs:<11.3e} {r.one_minus_cos:<10.3e} "
            f"{'yes' if r.passed else 'NO'}"
        )
    return "\n".join(lines)

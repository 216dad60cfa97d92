"""EmoCue-360: cue-level precision / recall / F1 of predicted cues against reference cues.

`max` matching is the released metric (XEmoGPT, EmoCue-360/compute_prf.py): per sample and category a cosine
matrix S between reference cues G (rows) and predicted cues P (columns) of all-MiniLM-L6-v2 embeddings;
recall = mean over G of its best match in P, precision = mean over P of its best match in G, F1 = 2PR/(P+R)
(0 when P+R <= 0); each number is then averaged over samples. The release's edge rules are kept:

- a sample whose reference list for a category is empty is skipped for that category;
- an empty prediction list scores 0 (precision, recall and F1);
- auditory cues containing the substring "text" are dropped on both sides (they quote the subtitle, which the
  model was given as input), and the sample is skipped when no reference auditory cue is left;
- the release iterates over the predictions, so a prediction entry without an "emotional" key scores 0 for
  emotional even when the reference list is empty; a missing "visual"/"auditory" key (a crash there) is read
  as an empty list here.

Differences from the release, both additive: references with no prediction are reported as missing coverage
(the release ignores them silently) together with a "missing_as_zero" variant of every mean, and predictions
with no reference are listed as "extra" (the release raises KeyError). The metric has no threshold and no
one-to-one constraint, so a duplicated or generic cue scores as often as it is repeated; `one-to-one` matching
(Hungarian assignment, pairs below `threshold` do not count) is offered so duplicates stop paying.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engines.errors import BadRequest
from eval.embed import Embedder

CATEGORIES = ("visual", "auditory", "emotional")
Matching = Literal["max", "one-to-one"]
Cues = dict[str, list[str]]


class CueFormatError(BadRequest):
    """A cue file that is not {sample_id: {"visual": [...], "auditory": [...], "emotional": [...]}}."""

    type = "bad_cues"


def keep_cue(category: str, cue: str) -> bool:
    """The release's subtitle filter: auditory cues that mention "text" are not scored (case-sensitive)."""
    return not (category == "auditory" and "text" in cue)


def validate_cues(data: Any, what: str) -> dict[str, dict[str, Any]]:
    """Check the released file layout; category lists must hold strings (missing categories stay missing)."""
    if not isinstance(data, Mapping):
        raise CueFormatError(f"{what}: expected a JSON object mapping sample ids to cue lists")
    out: dict[str, dict[str, Any]] = {}
    for sid, entry in data.items():
        if not isinstance(entry, Mapping):
            raise CueFormatError(f"{what}: sample {sid!r} must map to an object with visual/auditory/emotional")
        clean: dict[str, Any] = {}
        for cat in CATEGORIES:
            if cat not in entry:
                continue
            cues = entry[cat]
            if cues is None:
                cues = []
            if isinstance(cues, str):
                cues = [cues]
            if not isinstance(cues, list) or not all(isinstance(c, str) for c in cues):
                raise CueFormatError(f"{what}: sample {sid!r}, {cat!r} must be a list of strings")
            clean[cat] = [c.strip() for c in cues if c.strip()]
        out[str(sid)] = clean
    return out


def match_scores(sim: np.ndarray, matching: Matching = "max", threshold: float = 0.5) -> tuple[float, float]:
    """(recall, precision) from a cosine matrix with reference cues as rows and predicted cues as columns."""
    if sim.shape[0] == 0:
        raise ValueError("no reference cues")
    if sim.shape[1] == 0:
        return 0.0, 0.0
    if matching == "max":
        return float(sim.max(axis=1).mean()), float(sim.max(axis=0).mean())
    if matching == "one-to-one":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(sim, maximize=True)
        matched = sim[rows, cols]
        total = float(matched[matched >= threshold].sum())
        # Each cue can be matched once: unmatched and sub-threshold cues contribute 0 to the mean.
        return total / sim.shape[0], total / sim.shape[1]
    raise BadRequest(f"unknown matching {matching!r}: use 'max' or 'one-to-one'")


def f1_of(recall: float, precision: float) -> float:
    s = recall + precision
    return 2 * recall * precision / s if s > 0 else 0.0


@dataclass
class CategoryResult:
    recall: float | None
    precision: float | None
    f1: float | None
    n: int  # samples scored for this category
    n_missing: int = 0  # samples with reference cues for this category but no prediction at all
    missing_as_zero: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "n": self.n,
            "n_missing": self.n_missing,
            "missing_as_zero": self.missing_as_zero,
        }


@dataclass
class ScoreReport:
    matching: str
    threshold: float | None
    categories: dict[str, CategoryResult]
    per_sample: dict[str, dict[str, dict[str, float] | None]]
    coverage: dict[str, Any]
    embedder: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "matching": self.matching,
            "threshold": self.threshold,
            "embedder": self.embedder,
            **{c: self.categories[c].to_dict() for c in CATEGORIES},
            "coverage": self.coverage,
            "per_sample": self.per_sample,
        }

    def prf(self) -> dict[str, dict[str, float | None]]:
        """The nine numbers of the paper's table."""
        return {c: {"precision": r.precision, "recall": r.recall, "f1": r.f1} for c, r in self.categories.items()}


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def score(
    pred: Mapping[str, Any],
    ref: Mapping[str, Any],
    embedder: Embedder,
    matching: Matching = "max",
    threshold: float = 0.5,
) -> ScoreReport:
    """Score predicted cue lists against reference cue lists (both in the released JSON layout)."""
    if matching not in ("max", "one-to-one"):
        raise BadRequest(f"unknown matching {matching!r}: use 'max' or 'one-to-one'")
    pred_c = validate_cues(pred, "predictions")
    ref_c = validate_cues(ref, "references")
    scored = [s for s in pred_c if s in ref_c]
    missing = sorted(s for s in ref_c if s not in pred_c)
    extra = sorted(s for s in pred_c if s not in ref_c)

    # One batched pass over every distinct cue (the embedder caches by text).
    texts: list[str] = []
    for sid in scored:
        for cat in CATEGORIES:
            texts += [c for c in pred_c[sid].get(cat, []) + ref_c[sid].get(cat, []) if keep_cue(cat, c)]
    uniq = list(dict.fromkeys(texts))
    vec = dict(zip(uniq, embedder.encode(uniq), strict=True)) if uniq else {}

    per_sample: dict[str, dict[str, dict[str, float] | None]] = {}
    sums: dict[str, dict[str, list[float]]] = {c: {"recall": [], "precision": [], "f1": []} for c in CATEGORIES}
    for sid in scored:
        p_entry, r_entry = pred_c[sid], ref_c[sid]
        row: dict[str, dict[str, float] | None] = {}
        for cat in CATEGORIES:
            if cat == "emotional" and cat not in p_entry:
                rec = prec = 0.0  # the release scores a missing emotional key as 0 before looking at the ref
            else:
                g = [c for c in r_entry.get(cat, []) if keep_cue(cat, c)]
                p = [c for c in p_entry.get(cat, []) if keep_cue(cat, c)]
                if not g:
                    row[cat] = None
                    continue
                if p:
                    sim = np.stack([vec[c] for c in g]) @ np.stack([vec[c] for c in p]).T
                else:
                    sim = np.zeros((len(g), 0), dtype=np.float32)
                rec, prec = match_scores(sim, matching, threshold)
            f1 = f1_of(rec, prec)
            row[cat] = {"recall": rec, "precision": prec, "f1": f1}
            for k, v in (("recall", rec), ("precision", prec), ("f1", f1)):
                sums[cat][k].append(v)
        per_sample[sid] = row

    cats: dict[str, CategoryResult] = {}
    for cat in CATEGORIES:
        n = len(sums[cat]["f1"])
        n_missing = sum(1 for s in missing if any(keep_cue(cat, c) for c in ref_c[s].get(cat, [])))
        zero = {k: (sum(v) / (n + n_missing) if n + n_missing else None) for k, v in sums[cat].items()}
        cats[cat] = CategoryResult(
            recall=_mean(sums[cat]["recall"]),
            precision=_mean(sums[cat]["precision"]),
            f1=_mean(sums[cat]["f1"]),
            n=n,
            n_missing=n_missing,
            missing_as_zero={"precision": zero["precision"], "recall": zero["recall"], "f1": zero["f1"]},
        )
    coverage = {
        "n_reference": len(ref_c),
        "n_prediction": len(pred_c),
        "n_scored": len(scored),
        "coverage": (len(scored) / len(ref_c)) if ref_c else None,
        "missing": missing,
        "extra": extra,
    }
    return ScoreReport(
        matching=matching,
        threshold=threshold if matching == "one-to-one" else None,
        categories=cats,
        per_sample=per_sample,
        coverage=coverage,
        embedder=str(getattr(embedder, "name", type(embedder).__name__)),
    )


def format_table(rep: ScoreReport) -> str:
    """Plain-text table for the CLI."""

    def f(x: float | None) -> str:
        return "   -  " if x is None else f"{x:6.4f}"

    lines = [
        f"EmoCue-360 ({rep.matching}"
        + (f", threshold {rep.threshold}" if rep.threshold is not None else "")
        + f", {rep.embedder})",
        f"{'category':<10} {'P':>6} {'R':>6} {'F1':>6} {'n':>5} {'missing':>7}",
    ]
    for cat in CATEGORIES:
        r = rep.categories[cat]
        lines.append(f"{cat:<10} {f(r.precision)} {f(r.recall)} {f(r.f1)} {r.n:>5} {r.n_missing:>7}")
    cov = rep.coverage
    pct = "-" if cov["coverage"] is None else f"{100 * cov['coverage']:.1f}%"
    lines.append(f"coverage: {cov['n_scored']}/{cov['n_reference']} reference samples predicted ({pct})")
    if cov["missing"]:
        shown = ", ".join(cov["missing"][:10]) + (" …" if len(cov["missing"]) > 10 else "")
        lines.append(f"missing predictions ({len(cov['missing'])}): {shown}")
    if cov["extra"]:
        lines.append(f"predictions without a reference, ignored ({len(cov['extra'])})")
    return "\n".join(lines)

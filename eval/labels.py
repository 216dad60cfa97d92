"""Label metrics of a benchmark run: accuracy, UAR (unweighted average recall), WAR, confusion matrix."""

from __future__ import annotations

from typing import Any

# Common spellings in MER / EMER annotations mapped onto the server's label words.
_SYNONYMS = {
    "happiness": "happy",
    "joy": "happy",
    "joyful": "happy",
    "anger": "angry",
    "sadness": "sad",
    "worry": "worried",
    "anxious": "worried",
    "anxiety": "worried",
    "fear": "fearful",
    "afraid": "fearful",
    "surprised": "surprise",
    "neutrality": "neutral",
    "calm": "neutral",
    "disgusted": "disgust",
}


def normalise_label(label: str | None) -> str | None:
    if label is None:
        return None
    s = str(label).strip().lower()
    return _SYNONYMS.get(s, s) or None


def label_metrics(pairs: list[tuple[str, str]], labels: list[str] | None = None) -> dict[str, Any]:
    """pairs = [(reference, prediction)], already normalised. WAR (recall weighted by class frequency) equals
    accuracy; UAR averages per-class recall over the classes present in the references."""
    n = len(pairs)
    order = list(dict.fromkeys([*(labels or []), *sorted({r for r, _ in pairs}), *sorted({p for _, p in pairs})]))
    idx = {lab: i for i, lab in enumerate(order)}
    matrix = [[0] * len(order) for _ in order]
    for r, p in pairs:
        matrix[idx[r]][idx[p]] += 1
    correct = sum(1 for r, p in pairs if r == p)
    recalls = {}
    for lab in order:
        total = sum(matrix[idx[lab]])
        if total:
            recalls[lab] = matrix[idx[lab]][idx[lab]] / total
    acc = correct / n if n else None
    return {
        "accuracy": acc,
        "uar": (sum(recalls.values()) / len(recalls)) if recalls else None,
        "war": acc,
        "n": n,
        "per_class_recall": recalls,
        "confusion": {"labels": order, "matrix": matrix},  # rows: reference, columns: prediction
    }

"""Per-class scores and collapse detection from labels and predictions (NumPy and scikit-learn only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int]) -> dict[str, object]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support; undefined scores count as 0."""
    labels = list(classes)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = s > 0
    return {
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0,
        "macro_f1": float(f[present].mean()) if present.any() else 0.0,
        "precision": dict(zip(labels, p.astype(float).tolist())),
        "recall": dict(zip(labels, r.astype(float).tolist())),
        "f1": dict(zip(labels, f.astype(float).tolist())),
        "support": dict(zip(labels, s.astype(int).tolist())),
    }


def flat_scores(scores: Mapping[str, Any], names: Sequence[str], prefix: str) -> dict[str, float]:
    """:func:`per_class_scores` as ``{prefix}_accuracy``, ``{prefix}_macro_f1`` and ``{prefix}_<metric>_<class name>``."""
    out = {f"{prefix}_accuracy": scores["accuracy"], f"{prefix}_macro_f1": scores["macro_f1"]}
    for metric in ("precision", "recall", "f1"):
        for c, name in zip(scores[metric], names):
            out[f"{prefix}_{metric}_{name}"] = scores[metric][c]
    return out


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Confusion matrix with rows = true class, columns = predicted class, in ``classes`` order."""
    return confusion_matrix(y_true, y_pred, labels=list(classes))


def collapse_reason(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int], names: Sequence[str] | None = None,
    dominance: float = 0.98, check_recall: bool = True,
) -> str | None:
    """Say why predictions look collapsed, or None.

    Collapsed means one class is predicted for at least ``dominance`` of the rows, or (with
    ``check_recall``) a class with rows is never predicted correctly (recall 0).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_pred) == 0:
        return None
    names = list(names) if names is not None else [str(c) for c in classes]
    values, counts = np.unique(y_pred, return_counts=True)
    top = int(np.argmax(counts))
    share = counts[top] / len(y_pred)
    if share >= dominance:
        label = names[list(classes).index(values[top])] if values[top] in classes else str(values[top])
        return f"predicts class {label} for {share:.1%} of {len(y_pred)} rows"
    dead = zero_recall(y_true, y_pred, classes, names) if check_recall else []
    if dead:
        return f"recall is 0 for class(es) {', '.join(dead)}"
    return None


def zero_recall(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int],
                names: Sequence[str] | None = None) -> list[str]:
    """Names of the classes that have rows but are never predicted correctly."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    names = list(names) if names is not None else [str(c) for c in classes]
    return [names[i] for i, c in enumerate(classes)
            if np.any(y_true == c) and not np.any((y_pred == c) & (y_true == c))]


def aami_scores(matrix: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """AAMI EC57 per-class sensitivity ``Se``, positive predictivity ``+P``, ``FPR`` and ``F1``.

    ``matrix`` has true classes in rows and predictions in columns. Undefined ratios are 0.
    """
    m = np.asarray(matrix, dtype=float)
    total = m.sum()
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        tp = m[i, i]
        fn = m[i].sum() - tp
        fp = m[:, i].sum() - tp
        tn = total - tp - fn - fp
        se = tp / (tp + fn) if tp + fn else 0.0
        pp = tp / (tp + fp) if tp + fp else 0.0
        out[name] = {"Se": se, "+P": pp, "FPR": fp / (fp + tn) if fp + tn else 0.0,
                     "F1": 2 * se * pp / (se + pp) if se + pp else 0.0}
    return out

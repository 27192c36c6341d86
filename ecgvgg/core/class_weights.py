"""Class weights from class counts and records (no TensorFlow): what the network trains with and the tree follows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def balanced_class_weight(counts: Mapping[int, int]) -> dict[int, float]:
    """``n_rows / (n_classes * n_rows_of_class)`` per class, as scikit-learn's ``"balanced"``."""
    present = {int(c): int(n) for c, n in counts.items() if n > 0}
    total, k = sum(present.values()), len(present)
    return {c: total / (k * n) for c, n in present.items()}


def effective_records(y: np.ndarray, groups: np.ndarray, classes: Sequence[int]) -> dict[int, float]:
    """How many records each class comes from, counted as ``exp`` of the Shannon entropy of its rows over
    the records (Hill's diversity number): k records with equal shares count k, one dominant record about 1."""
    out = {}
    y, groups = np.asarray(y), np.asarray(groups)
    for c in classes:
        _, n = np.unique(groups[y == c], return_counts=True)
        p = n / n.sum() if n.sum() else n
        out[int(c)] = float(np.exp(-(p * np.log(p)).sum())) if len(n) else 0.0
    return out


def records_class_weight(counts: Mapping[int, int], records: Mapping[int, float]) -> dict[int, float]:
    """Balanced weights scaled by each class's effective number of records over the largest one's."""
    balanced = balanced_class_weight(counts)
    most = max((records.get(c, 0.0) for c in balanced), default=0.0) or 1.0
    return {c: w * max(records.get(c, 0.0), 1.0) / most for c, w in balanced.items()}


def capped(weights: Mapping[int, float], cap: float | None) -> dict[int, float]:
    """The weights with none above ``cap`` (None: unchanged)."""
    return {int(c): (min(w, cap) if cap is not None else w) for c, w in weights.items()}


def rows_class_weight(
    spec: str | Mapping[int, float] | None,
    y: np.ndarray,
    groups: np.ndarray | None,
    classes: Sequence[int],
    cap: float | None = None,
) -> dict[int, float]:
    """The class weights ``training.class_weight`` gives a set of rows that was not oversampled (the baseline's):
    ``records`` weighted by records (needs ``groups``), a mapping as given, anything else balanced; computed
    weights capped at ``cap`` as the network's are."""
    if isinstance(spec, Mapping):
        return {int(c): float(w) for c, w in spec.items()}
    present = [int(c) for c in classes if np.any(np.asarray(y) == c)]
    counts = {c: int(np.sum(np.asarray(y) == c)) for c in present}
    if spec == "records" and groups is not None:
        weights = records_class_weight(counts, effective_records(y, groups, present))
    else:
        weights = balanced_class_weight(counts)
    return capped(weights, cap)

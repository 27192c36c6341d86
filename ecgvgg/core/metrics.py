"""Per-class scores and collapse detection from labels and predictions (NumPy and scikit-learn only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support; undefined scores count as 0."""
    return scores_from_confusion(confusion(y_true, y_pred, classes), classes)


def scores_from_confusion(matrix: np.ndarray, classes: Sequence[int]) -> dict[str, object]:
    """:func:`per_class_scores` from a confusion matrix (true classes in rows), e.g. one summed batch by batch."""
    m = np.asarray(matrix, dtype=np.int64)
    labels, tp = list(classes), np.diagonal(m).astype(float)
    support, predicted = m.sum(axis=1), m.sum(axis=0)
    p = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    r = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=(p + r) > 0)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / m.sum()) if m.sum() else 0.0,
        "macro_f1": float(f[present].mean()) if present.any() else 0.0,
        "precision": dict(zip(labels, p.tolist())),
        "recall": dict(zip(labels, r.tolist())),
        "f1": dict(zip(labels, f.tolist())),
        "support": dict(zip(labels, support.astype(int).tolist())),
    }


def report_text(scores: Mapping[str, Any], names: Sequence[str], digits: int = 3) -> str:
    """A classification report (per class, accuracy, macro and weighted averages) from :func:`per_class_scores`."""
    classes = list(scores["support"])
    width = max(12, *(len(n) for n in names))
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    support = np.array([scores["support"][c] for c in classes], dtype=float)
    rows = [head, ""]
    for c, name in zip(classes, names):
        rows.append(
            f"{name:>{width}} {scores['precision'][c]:>9.{digits}f} {scores['recall'][c]:>9.{digits}f} "
            f"{scores['f1'][c]:>9.{digits}f} {scores['support'][c]:>9d}"
        )
    total = int(support.sum())
    rows += ["", f"{'accuracy':>{width}} {'':>9} {'':>9} {scores['accuracy']:>9.{digits}f} {total:>9d}"]
    for label, weights in (("macro avg", np.ones_like(support)), ("weighted avg", support)):
        w = weights / weights.sum() if weights.sum() else weights
        means = [float(np.dot(w, [scores[k][c] for c in classes])) for k in ("precision", "recall", "f1")]
        rows.append(f"{label:>{width}} " + " ".join(f"{v:>9.{digits}f}" for v in means) + f" {total:>9d}")
    return "\n".join(rows) + "\n"


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
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: Sequence[int],
    names: Sequence[str] | None = None,
    dominance: float = 0.98,
    check_recall: bool = True,
    min_rows: int = 1,
) -> str | None:
    """Say why predictions look collapsed, or None (see :func:`collapse_from_confusion`)."""
    return collapse_from_confusion(
        confusion(y_true, y_pred, classes),
        names or [str(c) for c in classes],
        dominance=dominance,
        check_recall=check_recall,
        min_rows=min_rows,
    )


def collapse_from_confusion(
    matrix: np.ndarray, names: Sequence[str], *, dominance: float = 0.98, check_recall: bool = True, min_rows: int = 1
) -> str | None:
    """Say why the predictions of a confusion matrix (true classes in rows) look collapsed, or None.

    Collapsed means one class is predicted for at least ``dominance`` of the rows, or a class
    that has rows (at least ``min_rows`` of them) is never predicted at all (named with its
    support). With ``check_recall`` a class whose recall is 0 (predicted, but never for its own
    rows) counts too.
    """
    m = np.asarray(matrix, dtype=np.int64)
    total, support, predicted = int(m.sum()), m.sum(axis=1), m.sum(axis=0)
    if total == 0:
        return None
    top = int(np.argmax(predicted))
    if predicted[top] / total >= dominance:
        return f"predicts class {names[top]} for {predicted[top] / total:.1%} of {total} rows"
    never = [
        f"{names[i]} ({int(support[i])} rows)" for i in range(len(names)) if support[i] >= max(min_rows, 1) and predicted[i] == 0
    ]
    if never:
        return f"never predicts class(es) {', '.join(never)}"
    dead = [names[i] for i in range(len(names)) if support[i] and not m[i, i]] if check_recall else []
    if dead:
        return f"recall is 0 for class(es) {', '.join(dead)}"
    return None


def dominant_class(
    y_pred: np.ndarray, classes: Sequence[int], names: Sequence[str] | None = None, dominance: float = 0.98
) -> str | None:
    """``"predicts class N for 99.0% of 300 rows"`` when one class takes ``dominance`` of the predictions, else None."""
    y_pred = np.asarray(y_pred)
    if len(y_pred) == 0:
        return None
    names = list(names) if names is not None else [str(c) for c in classes]
    values, counts = np.unique(y_pred, return_counts=True)
    top = int(np.argmax(counts))
    share = counts[top] / len(y_pred)
    if share < dominance:
        return None
    label = names[list(classes).index(values[top])] if values[top] in classes else str(values[top])
    return f"predicts class {label} for {share:.1%} of {len(y_pred)} rows"


def held_out_verdict(
    parts: Mapping[str, tuple[np.ndarray, np.ndarray] | np.ndarray],
    classes: Sequence[int],
    names: Sequence[str] | None = None,
    dominance: float = 0.98,
    min_rows: int = 1,
) -> tuple[str | None, dict[str, str]]:
    """The collapse verdict on all held-out rows pooled, and the classes missed on some part of them.

    ``parts`` maps a name (``validation``, ``test``, ``out-of-fold``) to ``(y_true, y_pred)`` or
    to its confusion matrix. Returns ``(reason, missed)``: ``reason`` from
    :func:`collapse_from_confusion` on the pooled rows (None when not collapsed; a class of fewer
    than ``min_rows`` held-out rows that is never predicted is only missed); ``missed`` names each
    class with recall 0 on a part, e.g. ``{"S": "validation (3 rows)"}`` (empty when collapsed:
    the reason says it all).
    """
    names = list(names) if names is not None else [str(c) for c in classes]
    matrices = {
        where: confusion(*part, classes) if isinstance(part, tuple) else np.asarray(part) for where, part in parts.items()
    }
    reason = collapse_from_confusion(
        np.sum(list(matrices.values()), axis=0), names, dominance=dominance, check_recall=False, min_rows=min_rows
    )
    if reason:
        return reason, {}
    missed: dict[str, list[str]] = {}
    for where, m in matrices.items():
        for i, name in enumerate(names):
            if m[i].sum() and not m[i, i]:
                missed.setdefault(name, []).append(f"{where} ({int(m[i].sum())} rows)")
    return None, {name: ", ".join(found) for name, found in missed.items()}


def macro_f1_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """Macro-F1 over the classes with rows, from one confusion matrix or a stack of them (``(..., k, k)``)."""
    m = np.asarray(matrix, dtype=float)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    support, predicted = m.sum(axis=-1), m.sum(axis=-2)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    return np.sum(f1 * present, axis=-1) / np.maximum(present.sum(axis=-1), 1)


def bootstrap_macro_f1(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: Sequence[int],
    groups: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the macro-F1; resamples whole groups (e.g. recordings) when given.

    Beats of one recording are correlated, so with ``groups`` each replicate draws groups with
    replacement and keeps all their beats; without, it draws beats.
    """
    if len(y_true) == 0:
        return 0.0, 0.0
    keys = np.arange(len(y_true)) if groups is None else np.asarray(groups)
    return bootstrap_from_confusions(group_confusions(y_true, y_pred, classes, keys), n_boot=n_boot, level=level, seed=seed)


def group_keys(groups: np.ndarray) -> np.ndarray:
    """Each row's group as a number 0..G-1, groups in sorted order (of their names as text, unless integers)."""
    g = np.asarray(groups)
    return np.unique(g if g.dtype.kind in "iu" else g.astype(str), return_inverse=True)[1].reshape(-1)


def class_positions(y: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Each label's position in ``classes``."""
    index = {int(c): i for i, c in enumerate(classes)}
    return np.array([index[int(v)] for v in np.asarray(y)], dtype=np.int64)


def group_confusions(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: Sequence[int],
    groups: np.ndarray,
) -> np.ndarray:
    """One confusion matrix per group, ``(groups, k, k)``, in the order of :func:`group_keys`."""
    keys = group_keys(groups)
    out = np.zeros((int(keys.max()) + 1 if len(keys) else 0, len(classes), len(classes)), dtype=np.int64)
    np.add.at(out, (keys, class_positions(y_true, classes), class_positions(y_pred, classes)), 1)
    return out


def bootstrap_from_confusions(
    per_group: np.ndarray, *, by_beat: bool = False, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the macro-F1 from per-group confusion matrices, groups drawn with replacement.

    With ``by_beat`` beats are drawn instead, from the pooled matrix (a multinomial draw of its
    cells): the same resampling without one matrix per beat.
    """
    per_group = np.asarray(per_group, dtype=float)
    n_groups, total = len(per_group), per_group.sum()
    if n_groups == 0 or total == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    scores = np.empty(n_boot)
    pooled = per_group.sum(axis=0)
    for start in range(0, n_boot, 100):  # a replicate is a weighted sum of the groups' matrices
        stop = min(start + 100, n_boot)
        if by_beat:
            replicates = rng.multinomial(int(total), pooled.ravel() / total, size=stop - start)
            scores[start:stop] = macro_f1_from_confusion(replicates.reshape(-1, *pooled.shape))
            continue
        draws = rng.integers(0, n_groups, size=(stop - start, n_groups))
        weights = np.stack([np.bincount(d, minlength=n_groups) for d in draws])
        scores[start:stop] = macro_f1_from_confusion(np.tensordot(weights, per_group, axes=1))
    alpha = (1 - level) / 2
    low, high = np.quantile(scores, [alpha, 1 - alpha])
    return float(low), float(high)


def zero_recall(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int], names: Sequence[str] | None = None) -> list[str]:
    """Names of the classes that have rows but are never predicted correctly."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    names = list(names) if names is not None else [str(c) for c in classes]
    return [names[i] for i, c in enumerate(classes) if np.any(y_true == c) and not np.any((y_pred == c) & (y_true == c))]


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
        out[name] = {
            "Se": se,
            "+P": pp,
            "FPR": fp / (fp + tn) if fp + tn else 0.0,
            "F1": 2 * se * pp / (se + pp) if se + pp else 0.0,
        }
    return out


def jk_index(matrix: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """The jκ index of Mondéjar-Guerra et al. 2019: ``κ / 2 + j / 8``.

    ``j`` is Se + +P of S plus Se + +P of V (AAMI SVEB and VEB, 0..4); ``κ`` is Cohen's kappa
    over the whole confusion matrix (true classes in rows).
    """
    m = np.asarray(matrix, dtype=float)
    total = m.sum()
    agree = np.trace(m) / total if total else 0.0
    chance = float((m.sum(axis=1) * m.sum(axis=0)).sum() / total**2) if total else 0.0
    kappa = (agree - chance) / (1 - chance) if chance < 1 else 0.0
    aami = aami_scores(m, names)
    j = sum(aami[c]["Se"] + aami[c]["+P"] for c in ("S", "V") if c in aami)
    return {"kappa": float(kappa), "j": float(j), "jk": float(kappa / 2 + j / 8)}

"""Baselines that a VGG16 has to beat, trained on the same rows (scikit-learn only, no TensorFlow).

* ``rf``: a random forest (balanced class weights) on the raw rows;
* ``hgb``: a histogram gradient-boosted tree (balanced class weights, or the run's) on the rhythm columns, the
  beats, each beat minus its reference beat and a few measures of how the beat differs from its
  reference (:func:`template_measures`): the patient-aware baseline for tables that have rhythm
  columns or reference channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from ecgvgg.core.rows import split_rows

#: Trees in the random-forest baseline.
RF_TREES = 300
#: Boosting iterations of the gradient-boosted baseline.
HGB_ITERATIONS = 200
#: What each baseline is called in a run's output.
BASELINE_NAMES = {"rf": "random forest", "hgb": "gradient-boosted tree"}


def comparison(
    baseline_kind: str, blend: float, score: float, baseline: float, consensus: float = 0.0, adaptation: float = 0.0
) -> str:
    """``VGG16 vs random forest: 0.900 vs 0.850 (+0.050)``, naming the blend when the model is one and its
    record adaptation and consensus when it has them."""
    name = BASELINE_NAMES.get(baseline_kind, baseline_kind)
    ours = f"VGG16 + {name} (blend {blend:g})" if blend else "VGG16"
    ours += f" with record adaptation {adaptation:g}" if adaptation else ""
    ours += f"{' and' if adaptation else ' with'} record consensus {consensus:g}" if consensus else ""
    return f"{ours} vs {name}: {score:.3f} vs {baseline:.3f} ({score - baseline:+.3f})"


def random_forest_predict(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, *, seed: int = 0, trees: int = RF_TREES
) -> np.ndarray:
    """Fit a random forest (balanced class weights) on raw training beats and predict the test beats."""
    return random_forest(X_train, y_train, seed=seed, trees=trees).predict(np.asarray(X_test))


def random_forest(
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    seed: int = 0,
    trees: int = RF_TREES,
) -> RandomForestClassifier:
    """A random forest (balanced class weights) fitted on raw training beats."""
    forest = RandomForestClassifier(n_estimators=trees, class_weight="balanced", n_jobs=-1, random_state=seed)
    return forest.fit(np.asarray(X_train), np.asarray(y_train))


def reference_features(X: np.ndarray, channels: int = 1, references: int = 0, rhythm: int = 0) -> np.ndarray:
    """Rows ``(beat channels..., reference channels..., rhythm...)`` as the rhythm values, the beats, each
    referenced beat minus its reference and its :func:`template_measures` (the reference channels themselves
    are left out)."""
    own, refs, r = split_rows(X, channels, references, rhythm)
    parts = [r, own.reshape(len(own), -1)]
    if references:
        parts.append((own[:, :references] - refs).reshape(len(own), -1))
        parts.extend(template_measures(own[:, k], refs[:, k]) for k in range(references))
    return np.hstack(parts)


def template_measures(beat: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per row: how a beat differs from its reference beat, as a tree cannot form it from samples alone.

    The correlation of beat and reference over the window and around the reference's QRS (the
    reference's largest deviation from its median, +-10 % of the window), the size of their difference,
    and the beat's curve length, QRS amplitude and width, each relative to the reference's. The
    beat-to-template correlation is among the strongest single features for ventricular beats
    (Krasteva et al. 2015, PLOS ONE 10:e0140123)."""
    beat, ref = np.asarray(beat, dtype=np.float32), np.asarray(ref, dtype=np.float32)
    length = beat.shape[1]
    half = max(2, length // 10)
    centre = np.abs(ref - np.median(ref, axis=1, keepdims=True)).argmax(axis=1)
    around = np.clip(centre[:, None] + np.arange(-half, half + 1), 0, length - 1)
    beat_qrs, ref_qrs = np.take_along_axis(beat, around, 1), np.take_along_axis(ref, around, 1)
    scale = np.sqrt(((ref - ref.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)) + 1e-6
    out = [
        _correlation(beat, ref),
        _correlation(beat_qrs, ref_qrs),
        np.sqrt(((beat - ref) ** 2).mean(axis=1)) / scale,
        np.abs(beat - ref).max(axis=1) / scale,
        _ratio(np.abs(np.diff(beat, axis=1)).sum(axis=1), np.abs(np.diff(ref, axis=1)).sum(axis=1)),
        _ratio(np.abs(np.diff(beat_qrs, axis=1)).sum(axis=1), np.abs(np.diff(ref_qrs, axis=1)).sum(axis=1)),
        _ratio(np.ptp(beat_qrs, axis=1), np.ptp(ref_qrs, axis=1)),
        _ratio(_width(beat), _width(ref) + 1),
    ]
    return np.stack(out, axis=1).astype(np.float32)


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1) + 1e-9)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a / (b + 1e-6)


def _width(x: np.ndarray) -> np.ndarray:
    """Samples further from the row's median than half its largest deviation."""
    dev = np.abs(x - np.median(x, axis=1, keepdims=True))
    return (dev > 0.5 * dev.max(axis=1, keepdims=True)).sum(axis=1).astype(np.float32)


class ReferenceBoostedTree(ClassifierMixin, BaseEstimator):
    """scikit-learn's HistGradientBoostingClassifier (balanced class weights, or ``class_weight``) on
    :func:`reference_features`."""

    #: Trees saved before the weights were a parameter were fitted with balanced ones.
    class_weight: dict[int, float] | str = "balanced"

    def __init__(
        self,
        channels: int = 1,
        references: int = 0,
        rhythm: int = 0,
        max_iter: int = HGB_ITERATIONS,
        seed: int = 0,
        class_weight: dict[int, float] | str = "balanced",
    ):
        self.channels, self.references, self.rhythm = channels, references, rhythm
        self.max_iter, self.seed, self.class_weight = max_iter, seed, class_weight

    def fit(self, X: np.ndarray, y: np.ndarray) -> ReferenceBoostedTree:
        """Fit the tree on the rows' rhythm, beats, beats minus references and template measures."""
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter, class_weight=self.class_weight, random_state=self.seed
        )
        self.model_.fit(self._features(X), np.asarray(y))
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted classes of raw rows."""
        return self.model_.predict(self._features(X))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities of raw rows, in the order of ``classes_``."""
        return self.model_.predict_proba(self._features(X))

    def _features(self, X: np.ndarray) -> np.ndarray:
        return reference_features(X, self.channels, self.references, self.rhythm)


def class_probabilities(baseline: ClassifierMixin, rows: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """The baseline's probabilities of raw ``rows``, one column per class of ``classes`` (0 for a class it never saw)."""
    out = np.zeros((len(rows), len(classes)), dtype=np.float32)
    out[:, [list(classes).index(c) for c in baseline.classes_]] = baseline.predict_proba(np.asarray(rows))
    return out


def blended(probs: np.ndarray, baseline: ClassifierMixin, rows: np.ndarray, classes: Sequence[int], weight: float) -> np.ndarray:
    """``(1 - weight) x probs + weight x`` the baseline's probabilities of the raw ``rows``, columns in ``classes`` order."""
    return (1 - weight) * np.asarray(probs, dtype=np.float32) + weight * class_probabilities(baseline, rows, classes)


def baseline_model(
    kind: str,
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    seed: int = 0,
    channels: int = 1,
    references: int = 0,
    rhythm: Sequence[str] | int = 0,
    class_weight: dict[int, float] | None = None,
) -> ClassifierMixin:
    """The ``rf`` or ``hgb`` baseline fitted on raw training rows (``class_weight``: the tree's, default balanced)."""
    if kind == "rf":
        return random_forest(X_train, y_train, seed=seed)
    if kind == "hgb":
        n_rhythm = rhythm if isinstance(rhythm, int) else len(rhythm)
        weights = class_weight or "balanced"
        return ReferenceBoostedTree(channels, references, n_rhythm, seed=seed, class_weight=weights).fit(X_train, y_train)
    raise ValueError(f"unknown baseline {kind!r}; choose rf or hgb")

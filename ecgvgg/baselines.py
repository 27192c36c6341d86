"""Baselines that a VGG16 has to beat, trained on the same rows (scikit-learn only, no TensorFlow)."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier

#: Trees in the random-forest baseline.
RF_TREES = 300


def random_forest_predict(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, *, seed: int = 0,
                          trees: int = RF_TREES) -> np.ndarray:
    """Fit a random forest (balanced class weights) on raw training beats and predict the test beats."""
    return random_forest(X_train, y_train, seed=seed, trees=trees).predict(np.asarray(X_test))


def random_forest(X_train: np.ndarray, y_train: np.ndarray, *, seed: int = 0, trees: int = RF_TREES,
                  ) -> RandomForestClassifier:
    """A random forest (balanced class weights) fitted on raw training beats."""
    forest = RandomForestClassifier(n_estimators=trees, class_weight="balanced", n_jobs=-1, random_state=seed)
    return forest.fit(np.asarray(X_train), np.asarray(y_train))

"""What a study returns: a trained, scored fold, the whole study, and where an interrupted run stopped.

Plain data, in a module of its own, so that the MLflow edge (``tracking``, ``store``), observers and
searches can read results without importing the study loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgvgg.core.metrics import per_class_scores

if TYPE_CHECKING:  # annotations only: results stay plain data, importable without the study's modules
    from ecgvgg.core.config import PipelineConfig
    from ecgvgg.core.contract import InputContract
    from ecgvgg.core.folds import Fold


@dataclass
class ResumePoint:
    """Where an interrupted run stopped: epochs completed, the best monitored value and its epoch, its checkpoint."""

    epoch: int
    best: float | None
    checkpoint: Path
    best_epoch: int | None = None


@dataclass
class FoldResult:
    """One trained, scored fold: the model, its test predictions, scores, verdict and baseline."""

    fold: Fold
    counts: dict[str, dict[int, int]]
    model: Any
    fit: Any
    contract: InputContract
    probs: np.ndarray | None = None
    pred: np.ndarray | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    ci: tuple[float, float] | None = None
    baseline_pred: np.ndarray | None = None
    reason: str | None = None
    missed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    first_epoch: int = 1
    unfrozen_at: int | None = None
    y_val: np.ndarray | None = None
    y_test: np.ndarray | None = None
    saliency: Any = None  # ecgvgg.core.explain.ClassSaliency of test beats, per predicted class
    baseline_score: float | None = None  # the baseline's macro-F1 when its predictions are not kept (streamed)
    baseline: Any = None  # the fitted baseline, saved inside the model when it is blended (contract.blend)

    @property
    def pruned(self) -> str | None:
        """Why an observer stopped this fold's training early, else None (then nothing was scored)."""
        return self.fit.stopped_by

    @property
    def val_scores(self) -> dict[str, Any]:
        """Validation scores of the returned model."""
        return self.fit.val_scores

    @property
    def val_pred(self) -> np.ndarray | None:
        """Validation predictions of the returned model."""
        return self.fit.val_pred

    @property
    def baseline_macro_f1(self) -> float | None:
        """The baseline's test macro-F1, or None without a baseline."""
        if self.baseline_score is not None:
            return self.baseline_score
        return macro_f1(self.y_test, self.baseline_pred, len(self.contract.classes))


@dataclass
class StudyResult:
    """A whole study: its folds, and the scores to report (the single fold's test, or pooled out-of-fold)."""

    cfg: PipelineConfig
    folds: list[FoldResult]
    scores: dict[str, Any]
    ci: tuple[float, float] | None
    reason: str | None
    missed: dict[str, str]
    baseline_macro_f1: float | None
    kind: str
    cv: dict[str, Any] | None = None
    oof: dict[str, np.ndarray] | None = None
    ensemble: Any = None
    contract: InputContract | None = None
    seconds: float = 0.0
    pruned: str | None = None
    saliency: Any = None

    @property
    def collapsed(self) -> bool:
        """Whether the returned model collapsed."""
        return self.reason is not None

    @property
    def class_names(self) -> list[str]:
        """The configured class names."""
        return list(self.cfg.data.class_names)

    @property
    def val_macro_f1(self) -> float:
        """Validation macro-F1 of the returned model (the mean over folds when cross-validated)."""
        return float(np.mean([f.val_scores.get("macro_f1", 0.0) for f in self.folds]))

    @property
    def objective(self) -> float:
        """What a search maximises: the cross-validated mean macro-F1, else the validation macro-F1."""
        return self.cv["macro_f1"][0] if self.cv else float(self.folds[-1].val_scores.get("macro_f1", 0.0))


def macro_f1(y_true: np.ndarray | None, pred: np.ndarray | None, n_classes: int) -> float | None:
    """Macro-F1 of ``pred`` over classes ``0..n_classes-1``, or None without predictions."""
    if pred is None or y_true is None:
        return None
    return float(per_class_scores(y_true, pred, range(n_classes))["macro_f1"])

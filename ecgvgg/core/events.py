"""The study's events, which observers (MLflow, the terminal, a tuner's pruner) subscribe to.

Light on purpose: the command line imports it before TensorFlow, MLflow or scikit-learn load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ecgvgg.core.config import PipelineConfig
    from ecgvgg.core.dataset import StudyData
    from ecgvgg.core.folds import Fold
    from ecgvgg.core.resampling import Splits
    from ecgvgg.core.results import FoldResult, StudyResult


class Observer:
    """Hears the study's events; every method may be left as it is (doing nothing)."""

    def study_started(self, cfg: PipelineConfig, data: StudyData, folds: Sequence[Fold]) -> None:
        """Before the first fold."""

    def fold_started(self, k: int, cfg: PipelineConfig, data: StudyData, splits: Splits) -> Path | None:
        """Before fold ``k`` (1-based) trains; may return the folder for its checkpoint."""
        return None

    def epoch_ended(self, epoch: int, logs: Mapping[str, float]) -> str | None:
        """After each epoch (0-based) with its metrics; a returned reason stops the fold there."""
        return None

    def fold_ended(self, k: int, result: FoldResult) -> str | None:
        """After fold ``k`` is scored; a returned reason stops the study there."""
        return None

    def study_ended(self, result: StudyResult) -> None:
        """After the last fold, with the pooled result."""

    def keras_callbacks(self) -> Sequence[Any]:
        """Keras callbacks to train with (e.g. a progress bar over batches)."""
        return ()

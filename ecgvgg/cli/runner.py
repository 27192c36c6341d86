"""Run a study with its observers: MLflow, the terminal, and any others (a tuner's pruner).

The one composition that ``ecgvgg run``, ``sweep`` and ``tune`` use. A ``model.weights: run:ID``
network is looked up here (a local copy of its model and its contract), so the study itself
never reads the MLflow store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ecgvgg.core.config import RUN_PREFIX, PipelineConfig
from ecgvgg.core.contract import InputContract
from ecgvgg.core.dataset import StudyData, prepare
from ecgvgg.core.errors import ConfigError, DataError
from ecgvgg.core.folds import Fold
from ecgvgg.core.events import Observer
from ecgvgg.core.results import StudyResult

if TYPE_CHECKING:
    from ecgvgg.tracking.log import MlflowObserver


def source_run(cfg: PipelineConfig) -> tuple[Path, InputContract] | None:
    """The local model file and contract of a ``model.weights: run:ID`` network, or None."""
    weights = cfg.model.weights
    if not (weights and weights.startswith(RUN_PREFIX)):
        return None
    from ecgvgg.tracking import store

    uri, run_id = cfg.tracking.resolved_uri(), weights[len(RUN_PREFIX) :]
    try:
        return store.run_model_path(uri, run_id), store.run_contract(uri, run_id)
    except DataError as exc:
        raise ConfigError(f"model.weights: {exc}") from None


def full_run_ids(cfg: PipelineConfig) -> PipelineConfig:
    """``cfg`` with a ``model.weights: run:PREFIX`` expanded to the run's full id."""
    weights = cfg.model.weights
    if not (weights and weights.startswith(RUN_PREFIX)):
        return cfg
    from ecgvgg.tracking.store import resolve_run_id

    full = resolve_run_id(cfg.tracking.resolved_uri(), weights[len(RUN_PREFIX) :], "model.weights: run:")
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"weights": RUN_PREFIX + full})})


class Planned(NamedTuple):
    """A study ready to run: its data, its folds and the local file of its ``run:ID`` source network (or None)."""

    data: StudyData
    folds: list[Fold]
    source: Path | None = None


def check(cfg: PipelineConfig, data: StudyData | None = None) -> Planned:
    """Load and check the data and every data-dependent setting, and plan the folds, before any run exists."""
    source = source_run(cfg)
    data, folds = prepare(cfg, data, source[1] if source else None)
    return Planned(data, folds, source[0] if source else None)


def run_observed(
    cfg: PipelineConfig,
    planned: Planned,
    *,
    nested: bool = False,
    resume_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    observers: Sequence[Observer] = (),
    on_run: Callable[[str], None] | None = None,
) -> tuple[StudyResult, MlflowObserver]:
    """Run the study logged to MLflow with terminal progress; return the result and the MLflow observer
    (its ``run_id``, ``run_name``, ``model_uri`` and ``model_path``). ``on_run`` hears each run id opened."""
    from ecgvgg.cli.exits import StepInterrupts
    from ecgvgg.cli.progress import TerminalObserver
    from ecgvgg.cli.report import print_trained
    from ecgvgg.core.study import run_study
    from ecgvgg.tracking.log import MlflowObserver

    with (
        MlflowObserver(cfg, nested=nested, resume_run_id=resume_run_id, tags=tags, on_run=on_run) as tracker,
        TerminalObserver(cfg.training.epochs) as terminal,
    ):
        result = run_study(
            cfg,
            planned.data,
            planned.folds,
            [tracker, terminal, StepInterrupts(), *observers],
            source=planned.source,
            resume=tracker.resume,
        )
    if not result.pruned:
        print_trained(result, tracker.run_name)
    return result, tracker


class _Mirror(Observer):
    """A non-chief worker's stand-in for the chief's saving: checkpoints and the model go to a scratch folder,
    so that every worker makes the same calls on the shared variables, in the same order."""

    def __init__(self, scratch: Path):
        self.scratch = scratch

    def fold_started(self, k: int, cfg: PipelineConfig, data: StudyData, splits: Any) -> Path:
        """The fold's scratch folder, for its checkpoint."""
        folder = self.scratch / f"fold{k}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def fold_ended(self, k: int, result: Any) -> None:
        """Save the fold's model as the chief does."""
        from ecgvgg.core.inference import save_model

        if not result.pruned:
            save_model(result.model, self.scratch / f"fold{k}" / "model.keras", result.contract, result.baseline)


#: A folder where non-chief workers keep their checkpoints and final model (to compare with the chief's).
WORKER_DIR = "ECGVGG_WORKER_DIR"


def run_worker(cfg: PipelineConfig, planned: Planned) -> StudyResult:
    """Train and score as a non-chief worker of a multi-worker run: the same study, nothing logged, and
    nothing kept unless ``$ECGVGG_WORKER_DIR`` names a folder for it."""
    import os
    import tempfile
    from contextlib import nullcontext

    from ecgvgg.cli.exits import StepInterrupts
    from ecgvgg.core.study import run_study

    kept = os.environ.get(WORKER_DIR)
    with nullcontext(kept) if kept else tempfile.TemporaryDirectory(prefix="ecgvgg-worker-") as scratch:
        return run_study(cfg, planned.data, planned.folds, [_Mirror(Path(scratch)), StepInterrupts()], source=planned.source)

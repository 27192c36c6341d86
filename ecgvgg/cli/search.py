"""Searches over configurations: a grid sweep, and an Optuna study with pruning as an observer.

Each combination or trial is a whole study (:func:`ecgvgg.cli.runner.run_observed`) logged as a
child of one parent run (:func:`ecgvgg.tracking.log.search_run`). Pruning needs no exception across
modules: :class:`Pruner` answers an epoch or a fold with a reason, the study stops, and the
objective tells Optuna the trial was pruned.
"""

from __future__ import annotations

import itertools
import json
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ecgvgg.core.config import PipelineConfig, override
from ecgvgg.core.dataset import StudyData
from ecgvgg.core.errors import ConfigError, DataError
from ecgvgg.core.events import Observer
from ecgvgg.cli.runner import Planned
from ecgvgg.core.results import FoldResult, StudyResult


def grid_configs(cfg: PipelineConfig, grid: Mapping[str, Sequence[Any]]) -> list[tuple[dict[str, Any], PipelineConfig]]:
    """Every combination of ``grid`` (``key.path`` -> values) applied to ``cfg``, validated."""
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        combo = dict(zip(keys, values))
        out.append((combo, override(cfg, combo, source="--grid " + ", ".join(f"{k}={v}" for k, v in combo.items()))))
    return out


def check_grid(
    combos: Sequence[tuple[dict[str, Any], PipelineConfig]], check: Callable[[PipelineConfig, StudyData | None], Planned]
) -> list[Planned]:
    """Every combination's data and settings checked (each distinct data section loaded once), before any run."""
    loaded: dict[str, StudyData] = {}
    out = []
    for combo, child in combos:
        key = child.data.model_dump_json()
        try:
            planned = check(child, loaded.get(key))
        except (DataError, ConfigError) as exc:
            raise type(exc)(f"--grid {', '.join(f'{k}={v}' for k, v in combo.items())}: {exc}") from None
        loaded[key] = planned.data
        out.append(planned)
    return out


def sweep(
    cfg: PipelineConfig,
    grid: Mapping[str, Sequence[Any]],
    combos: Sequence[tuple[dict[str, Any], PipelineConfig]],
    planned: Sequence[Planned],
    on_run: Callable[[str], None] | None = None,
) -> tuple[str, list[tuple[dict[str, Any], StudyResult, str | None]]]:
    """Run every combination as a child of one parent run; return its id and the rows, best validation first."""
    from ecgvgg.cli.report import console
    from ecgvgg.cli.runner import run_observed
    from ecgvgg.tracking.log import search_run

    rows = []
    with search_run(cfg, cfg.tracking.run_name or "sweep", {"sweep": "true"}, {"grid": json.dumps(grid)}) as parent:
        for (combo, child), ready in zip(combos, planned):
            console.print(f"[bold]combination[/] {combo}")
            result, tracker = run_observed(child, ready, nested=True, on_run=on_run)
            rows.append((combo, result, tracker.run_id))
    rows.sort(key=lambda r: r[1].val_macro_f1, reverse=True)
    return parent.run_id, rows


class Pruner(Observer):
    """Reports to an Optuna trial and answers with a reason to stop when it should be pruned.

    Single split: the validation macro-F1 after every epoch. Cross-validation: the running mean
    of the folds' test macro-F1 after every fold.
    """

    def __init__(self, trial: Any, folds: int | None):
        self.trial, self.folds = trial, folds
        self.seen: list[float] = []

    def epoch_ended(self, epoch: int, logs: Mapping[str, float]) -> str | None:
        """Report the epoch's validation macro-F1 (single split)."""
        value = logs.get("val_macro_f1")
        if self.folds or value is None:
            return None
        self.trial.report(float(value), epoch + 1)
        return f"pruned at epoch {epoch + 1}" if self.trial.should_prune() else None

    def fold_ended(self, k: int, result: FoldResult) -> str | None:
        """Report the running mean of the folds' macro-F1 (cross-validation)."""
        if not self.folds:
            return None
        self.seen.append(result.scores["macro_f1"])
        self.trial.report(sum(self.seen) / len(self.seen), k)
        return f"pruned after fold {k}" if self.trial.should_prune() else None


def tune(
    cfg: PipelineConfig,
    dims: Mapping[str, Any],
    planned: Planned,
    trials: int,
    name: str,
    storage: str,
    out: Path,
    seed: int,
    space_path: Path,
    on_run: Callable[[str], None] | None = None,
) -> Any:
    """Run this process's trials of the study inside one parent run; return the table of the best trials."""
    import optuna

    from rich.markup import escape

    from ecgvgg.cli.report import console, trials_table
    from ecgvgg.cli.runner import check, run_observed
    from ecgvgg.tracking.log import search_run
    from ecgvgg.tracking.tuning import best_config_yaml, open_study, suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(name, storage, seed=seed, warmup=cfg.training.collapse_warmup)
    tags = {"study": name, "tune": "true", "optuna_storage": storage}
    params = {"trials": trials, "sampler_seed": seed, "space": space_path.read_text(encoding="utf-8")[:6000]}
    with search_run(cfg, f"tune-{name}-{uuid.uuid4().hex[:6]}", tags, params) as parent:
        parent.log_artifact(space_path)

        def objective(trial: Any) -> float:
            values = suggest(trial, dims)
            console.print(f"[bold]trial {trial.number}[/] {escape(str(values))}")
            trial_cfg = override(cfg, values, source=f"trial {trial.number}")
            ready = check(trial_cfg, planned.data if trial_cfg.data == cfg.data else None)
            result, tracker = run_observed(
                trial_cfg,
                ready,
                nested=True,
                on_run=on_run,
                tags={"study": name, "trial": str(trial.number)},
                observers=[Pruner(trial, trial_cfg.split.folds)],
            )
            if result.pruned:
                console.print(f"trial {trial.number} {result.pruned}")
                raise optuna.TrialPruned(result.pruned)
            trial.set_user_attr("run_id", tracker.run_id)
            return result.objective

        study.optimize(objective, n_trials=trials, catch=(ConfigError, DataError))
        done = _log_outcome(study, parent, name)
        out.parent.mkdir(parents=True, exist_ok=True)
        from ecgvgg.core.files import write_text

        write_text(best_config_yaml(cfg, study.best_params), out)
        parent.log_artifact(out)
        for figure_name, figure in study_figures(study):
            parent.log_figure(figure, figure_name)
    return trials_table(done, len(study.trials), name, out, list(dims))


def _log_outcome(study: Any, parent: Any, name: str) -> list[Any]:
    """Log the trials' states and the best value; refuse a study with no completed trial."""
    import optuna

    states = [t.state for t in study.trials]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    parent.log_metrics(
        {
            "trials_complete": len(done),
            "trials_pruned": states.count(optuna.trial.TrialState.PRUNED),
            "trials_failed": states.count(optuna.trial.TrialState.FAIL),
        }
    )
    if not done:
        raise ConfigError(f"study {name}: no trial completed (see the child runs)")
    parent.log_metrics({"best_value": study.best_value})
    return done


def study_figures(study: Any) -> list[tuple[str, Any]]:
    """Optuna's optimisation history and parameter importances as matplotlib figures (those it can draw)."""
    from optuna.visualization import matplotlib as plots

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, plot in (
            ("optimization_history.png", plots.plot_optimization_history),
            ("param_importances.png", plots.plot_param_importances),
        ):
            try:
                axes: Any = plot(study)  # one Axes, or an array of them
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few trials for importances
                continue
            figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            out.append((name, figure))
    return out

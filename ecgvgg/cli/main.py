"""The ``ecgvgg`` command: parse, check (before TensorFlow or MLflow load), run the study with its observers, report.

Exit status: 0 success, 2 bad config or bad data (one line, no traceback unless ``--debug``),
3 the model collapsed (predicts one class for almost everything, or never finds a class); see
:mod:`ecgvgg.cli.exits`.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from ecgvgg.core.errors import ConfigError
from ecgvgg.cli.exits import EXIT_COLLAPSED, Invocation, guard, load_tensorflow, show_warning
from ecgvgg.cli.report import collapse_box, console, err_console

#: ``--set key.path=value``, repeatable, as ``run``, ``sweep`` and ``tune`` take it.
SetOption = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a value: key.path=value (repeatable).")]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Train and compare VGG16-style ECG heartbeat classifiers without leaks or silent collapse.",
)


def _print_version(value: bool) -> None:
    if value:
        from ecgvgg import __version__

        print(f"ecgvgg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show TensorFlow's start-up output.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Leak-safe training and comparison of VGG16-style heartbeat classifiers."""
    ctx.obj = Invocation(debug=debug, verbose=verbose)
    for out in (console, err_console):  # without a terminal, lines are never hard-wrapped at 80 columns
        out.soft_wrap = not out.is_terminal
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # TensorFlow's INFO lines (collective ops of every worker step) and its retracing notes
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
        logging.getLogger("tensorflow").addFilter(lambda record: "retracing" not in record.getMessage())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep --json output clean
    warnings.showwarning = show_warning


@app.command()
def run(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    set_: SetOption = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue this interrupted run.")] = None,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Train data-parallel in N local processes (127.0.0.1); each process also honours TF_CONFIG."),
    ] = 1,
    tracking_uri: Annotated[
        Optional[str],
        typer.Option(help="MLflow store for the run (default: tracking.uri, $MLFLOW_TRACKING_URI, sqlite:///mlruns/mlflow.db)."),
    ] = None,
) -> None:
    """Run a pipeline in one MLflow run; print the run id, the test per-class table and the model path."""
    from ecgvgg.core.config import load_config
    from ecgvgg.core.distributed import cluster, is_chief, run_local_workers
    from ecgvgg.cli.report import print_run
    from ecgvgg.cli.runner import check, full_run_ids, run_observed, run_worker

    with guard(ctx.obj) as inv:
        if tracking_uri:
            set_ = [*(set_ or []), f"tracking.uri={tracking_uri}"]
        cfg = full_run_ids(load_config(config, set_ or []))
        if (workers > 1 or cluster()) and (cfg.split.folds or resume or cfg.training.unfreeze_after):
            raise ConfigError(
                "--workers / TF_CONFIG: several workers train one split from the start; not with "
                "split.folds, --resume or training.unfreeze_after"
            )
        if workers > 1:
            check(cfg)  # bad input: exit 2 here, before any worker starts
            sets = [arg for item in set_ or [] for arg in ("--set", item)]
            raise typer.Exit(run_local_workers(workers, [sys.executable, "-m", "ecgvgg.cli.main", "run", str(config), *sets]))
        if not is_chief():
            planned = check(cfg)
            load_tensorflow(inv)
            run_worker(cfg, planned)
            return
        if cfg.split.folds and resume:
            raise ConfigError("--resume: cross-validated runs (split.folds) cannot be resumed; start them again")
        if cfg.training.unfreeze_after and resume:
            raise ConfigError("--resume: two-phase fine-tuning (training.unfreeze_after) cannot be resumed; start again")
        if resume:
            from ecgvgg.tracking.store import resolve_run_id

            resume = resolve_run_id(cfg.tracking.resolved_uri(), resume, "--resume")
        planned = check(cfg)  # bad data and data-dependent settings: exit 2 before TensorFlow or MLflow load
        if not cfg.split.folds:
            inv.resume_hint = "ecgvgg run " + " ".join([str(config), *(f"--set {item}" for item in set_ or [])])
        load_tensorflow(inv)
        result, tracker = run_observed(cfg, planned, resume_run_id=resume, on_run=inv.run_opened)
    print_run(
        result,
        tracker.run_id,
        tracker.run_name,
        cfg.tracking.experiment,
        cfg.tracking.resolved_uri(),
        tracker.model_uri,
        tracker.model_path,
    )
    if result.collapsed:
        collapse_box(result.reason or "collapsed")
        raise typer.Exit(EXIT_COLLAPSED)


from ecgvgg.cli.annotate import annotate  # noqa: E402 - after app, as its commands
from ecgvgg.cli.models import evaluate, explain, export, predict  # noqa: E402
from ecgvgg.cli.records import download, prepare  # noqa: E402

for _command in (evaluate, predict, explain, export, annotate, prepare, download):
    app.command()(_command)


def _parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    from ecgvgg.core.config import parse_yaml

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--grid {item!r}: expected key.path=v1,v2,...")
        grid[key.strip()] = [parse_yaml(v, f"--grid {item}") for v in values.split(",")]
    return grid


@app.command()
def sweep(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    grid: Annotated[list[str], typer.Option("--grid", "-g", help="key.path=v1,v2,... (repeatable).")],
    set_: SetOption = None,
) -> None:
    """Run every combination of the grid as child runs of one parent run; print them by val macro-F1.

    Exits 3 only when every combination collapsed.
    """
    from ecgvgg.core.config import load_config
    from ecgvgg.cli.report import sweep_table
    from ecgvgg.cli.runner import check
    from ecgvgg.cli.search import check_grid, grid_configs
    from ecgvgg.cli.search import sweep as run_sweep

    with guard(ctx.obj) as inv:
        cfg = load_config(config, set_ or [])
        parsed = _parse_grid(grid)
        combos = grid_configs(cfg, parsed)
        planned = check_grid(combos, check)  # every combination's data and settings, before any run exists
        load_tensorflow(inv)
        parent, rows = run_sweep(cfg, parsed, combos, planned, on_run=inv.run_opened)
    console.print(sweep_table(rows, f"sweep {parent}"))
    if rows and all(r.collapsed for _, r, _ in rows):
        collapse_box("every combination of the sweep collapsed")
        raise typer.Exit(EXIT_COLLAPSED)


@app.command()
def tune(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Pipeline YAML file: the base configuration.")],
    space: Annotated[Path, typer.Option("--space", help="Search space YAML: key: {low, high[, log|step]} or [choices].")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="Trials for this process to run.")] = 20,
    study: Annotated[Optional[str], typer.Option("--study", help="Study name (shared by processes that use it).")] = None,
    storage: Annotated[
        Optional[str],
        typer.Option("--storage", help="Optuna storage: a database URL, or a journal file (default mlruns/optuna/STUDY.log)."),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Best configuration YAML (default beside the store).")
    ] = None,
    set_: SetOption = None,
    seed: Annotated[
        Optional[int],
        typer.Option(
            help="Sampler seed, for a reproducible single-worker search (default: training.seed mixed with the process "
            "id, so that workers sharing a study explore differently)."
        ),
    ] = None,
) -> None:
    """Search hyperparameters with Optuna (TPE, median pruning on validation macro-F1), one child run per trial.

    Several processes started with the same --study share one search through its storage.
    """
    from ecgvgg.core.config import load_config
    from ecgvgg.core.files import check_out
    from ecgvgg.cli.runner import check
    from ecgvgg.cli.search import tune as run_tune
    from ecgvgg.tracking.tuning import default_storage, load_space, sampler_seed

    with guard(ctx.obj) as inv:
        cfg = load_config(config, set_ or [])
        dims = load_space(space, cfg)
        planned = check(cfg)
        name = study or f"{cfg.tracking.experiment}-tune"
        inv.study = name
        uri = cfg.tracking.resolved_uri()
        where = storage or default_storage(uri, name)
        out = out or Path(default_storage(uri, name)).with_name(f"{name}-best.yaml")
        check_out(out.with_suffix(".csv"))
        load_tensorflow(inv)
        best = run_tune(
            cfg, dims, planned, trials, name, where, out, sampler_seed(cfg.training.seed, seed), space, on_run=inv.run_opened
        )
    console.print(best)


@app.command()
def runs(
    ctx: typer.Context,
    experiment: Annotated[Optional[str], typer.Option(help="Only this experiment.")] = None,
    sort: Annotated[Optional[str], typer.Option(help="Sort by this column, best first (e.g. macro_f1, seconds).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the table (.md or .csv).")] = None,
    stale: Annotated[bool, typer.Option("--stale", help="Only runs left RUNNING by a process that is gone.")] = False,
    close_stale: Annotated[
        bool, typer.Option("--close-stale", help="End the stale runs as KILLED (then --resume can continue them).")
    ] = False,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow store (default: as for run).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 100,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw macro-F1 with its interval against time (.png).")] = None,
) -> None:
    """One row per run: verdict, sampler, model, parameters, time, epochs, scores with interval, recall, baseline."""
    from ecgvgg.core.config import TrackingConfig
    from ecgvgg.core.files import check_out, write_text

    with guard(ctx.obj):
        for path, suffixes in ((out, (".md", ".csv")), (plot, (".png",))):
            if path is not None:
                check_out(path, suffixes=suffixes)
        uri = TrackingConfig(uri=tracking_uri).resolved_uri()
        from ecgvgg.tracking.runs import collect_runs, to_markdown

        frame = collect_runs(uri, experiment, stale_only=stale, close_stale=close_stale, sort=sort, limit=limit)
        if out is not None:
            write_text(to_markdown(frame) if out.suffix.lower() == ".md" else frame.to_csv(index=False), out)
        if plot is not None:
            from ecgvgg.core.figures import runs_figure, write_figure

            write_figure(runs_figure(frame, f"experiment {experiment}" if experiment else uri), plot)
    if (stale or close_stale) and not len(frame):
        console.print(f"no stale runs in {escape(uri)}: every run marked RUNNING is held by a live process", soft_wrap=True)
        return
    _print_runs(frame, uri, close_stale, out, plot)


def _print_runs(frame: Any, uri: str, closed: bool, out: Optional[Path], plot: Optional[Path]) -> None:
    """The runs as a Rich table on a terminal, else as Markdown; then what STALE means and what was written."""
    from ecgvgg.cli.report import runs_table
    from ecgvgg.tracking.runs import to_markdown

    if console.is_terminal:
        console.print(runs_table(frame, uri, console.width))
    else:  # piped or redirected: a Markdown table, one line per run, never wrapped
        print(to_markdown(frame), end="", flush=True)
    if (frame["status"] == "STALE").any():
        console.print(
            "STALE: MLflow shows the run as RUNNING but no live process holds it (killed, crashed); "
            "ecgvgg runs --close-stale ends such runs as KILLED, and --resume continues one",
            soft_wrap=True,
        )
    if closed and len(frame):
        console.print(
            f"marked {len(frame)} stale run(s) KILLED; continue one with ecgvgg run CONFIG --resume RUN_ID", soft_wrap=True
        )
    for path in (out, plot):
        if path is not None:
            console.print(f"wrote {len(frame)} runs to {escape(str(path))}", soft_wrap=True)


from ecgvgg.cli.help import polish_help  # noqa: E402

polish_help(app)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

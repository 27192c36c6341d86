"""The ``ecgvgg`` command: parse, check (before TensorFlow or MLflow load), run the study with its observers, report.

Exit status: 0 success, 2 bad config or bad data (one line, no traceback unless ``--debug``),
3 the model collapsed (predicts one class for almost everything, or never finds a class); see
:mod:`ecgvgg.exits`.
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

from ecgvgg.errors import ConfigError
from ecgvgg.exits import EXIT_COLLAPSED, Invocation, guard, load_tensorflow, show_warning
from ecgvgg.report import collapse_box, console, err_console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Train and compare VGG16-style ECG heartbeat classifiers without leaks or silent collapse.")


def _print_version(value: bool) -> None:
    if value:
        from ecgvgg import __version__

        print(f"ecgvgg {__version__}")
        raise typer.Exit()


@app.callback()
def main(ctx: typer.Context,
         debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", help="Show TensorFlow's start-up output.")] = False,
         version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
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
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a value: key.path=value (repeatable).")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue this interrupted run.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Train data-parallel in N local processes (127.0.0.1); "
                                                       "each process also honours TF_CONFIG.")] = 1,
    tracking_uri: Annotated[Optional[str], typer.Option(
        help="MLflow store for the run (default: tracking.uri, $MLFLOW_TRACKING_URI, sqlite:///mlruns/mlflow.db).")
    ] = None,
) -> None:
    """Run a pipeline in one MLflow run; print the run id, the test per-class table and the model path."""
    from ecgvgg.config import load_config
    from ecgvgg.distributed import cluster, is_chief, run_local_workers
    from ecgvgg.report import print_run
    from ecgvgg.runner import check, full_run_ids, run_observed, run_worker

    with guard(ctx.obj) as inv:
        if tracking_uri:
            set_ = [*(set_ or []), f"tracking.uri={tracking_uri}"]
        cfg = full_run_ids(load_config(config, set_ or []))
        if (workers > 1 or cluster()) and (cfg.split.folds or resume or cfg.training.unfreeze_after):
            raise ConfigError("--workers / TF_CONFIG: several workers train one split from the start; not with "
                              "split.folds, --resume or training.unfreeze_after")
        if workers > 1:
            check(cfg)  # bad input: exit 2 here, before any worker starts
            sets = [arg for item in set_ or [] for arg in ("--set", item)]
            raise typer.Exit(run_local_workers(workers, [sys.executable, "-m", "ecgvgg.cli", "run", str(config),
                                                         *sets]))
        if not is_chief():
            planned = check(cfg)
            load_tensorflow(inv)
            run_worker(cfg, planned)
            return
        if cfg.split.folds and resume:
            raise ConfigError("--resume: cross-validated runs (split.folds) cannot be resumed; start them again")
        if cfg.training.unfreeze_after and resume:
            raise ConfigError("--resume: two-phase fine-tuning (training.unfreeze_after) cannot be resumed; "
                              "start again")
        if resume:
            from ecgvgg.store import resolve_run_id

            resume = resolve_run_id(cfg.tracking.resolved_uri(), resume, "--resume")
        planned = check(cfg)  # bad data and data-dependent settings: exit 2 before TensorFlow or MLflow load
        if not cfg.split.folds:
            inv.resume_hint = "ecgvgg run " + " ".join([str(config), *(f"--set {item}" for item in set_ or [])])
        load_tensorflow(inv)
        result, tracker = run_observed(cfg, planned, resume_run_id=resume, on_run=inv.run_opened)
    print_run(result, tracker.run_id, tracker.run_name, cfg.tracking.experiment, cfg.tracking.resolved_uri(),
              tracker.model_uri, tracker.model_path)
    if result.collapsed:
        collapse_box(result.reason or "collapsed")
        raise typer.Exit(EXIT_COLLAPSED)


from ecgvgg.cli_annotate import annotate  # noqa: E402 - after app, as its commands
from ecgvgg.cli_models import evaluate, explain, export, predict  # noqa: E402

for _command in (evaluate, predict, explain, export, annotate):
    app.command()(_command)


@app.command()
def prepare(
    ctx: typer.Context,
    records_dir: Annotated[Path, typer.Argument(help="Folder of WFDB records (.hea/.dat/.atr).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output beats file (.parquet or .csv).")],
    method: Annotated[str, typer.Option(help="kachuee (125 Hz, 1.2 x median RR, 187 samples) or window.")] = "kachuee",
    channel: Annotated[str, typer.Option(help="Signal name to use; a record without it uses MLII, else ECG1, "
                                              "else its first signal.")] = "MLII",
    leads: Annotated[Optional[str], typer.Option(help="Leads to cut, one channel each, e.g. MLII,V1 (stand-ins by "
                                                      "database: ECG1/ECG2 in SVDB, V2/V4/V5 for V1); "
                                                      "replaces --channel.")] = None,
    reference: Annotated[str, typer.Option(help="Each lead's reference beat as ref* columns: none; record (the "
                                                "median beat of the record); causal (running median of the "
                                                "preceding --reference-window seconds).")] = "none",
    reference_window: Annotated[float, typer.Option(help="causal reference: seconds of past beats.")] = 300.0,
    annotator: Annotated[str, typer.Option(help="Extension of the beat annotation files, e.g. atr.")] = "atr",
    before: Annotated[float, typer.Option(help="window: seconds before the R peak.")] = 0.25,
    after: Annotated[float, typer.Option(help="window: seconds after the R peak.")] = 0.45,
    rate: Annotated[float, typer.Option(help="window: sampling rate of the cut beats in Hz.")] = 125.0,
    bandpass: Annotated[Optional[str], typer.Option(help="Band-pass filter LOW,HIGH in Hz, e.g. 0.5,40.")] = None,
    scale: Annotated[str, typer.Option(help="none; record: each record divided by its median R-peak height; "
                                            "window: each 10 s scaled to [0, 1] (as kachuee).")] = "none",
) -> None:
    """Cut annotated beats from WFDB records into one row per beat with label, record and sample columns."""
    from rich.progress import Progress

    from ecgvgg.files import check_out, write_table
    from ecgvgg.records import prepare_records

    with guard(ctx.obj):
        if method not in ("kachuee", "window"):
            raise ConfigError(f"--method {method!r}: choose kachuee or window")
        if scale not in ("none", "record", "window"):
            raise ConfigError(f"--scale {scale!r}: choose none, record or window")
        if not (rate > 0 and before >= 0 and after > 0):
            raise ConfigError("--rate and --after must be > 0 and --before >= 0")
        if reference not in ("none", "record", "causal"):
            raise ConfigError(f"--reference {reference!r}: choose none, record or causal")
        if not reference_window > 0:
            raise ConfigError("--reference-window must be > 0 seconds")
        lead_list = [lead.strip() for lead in leads.split(",")] if leads else None
        if lead_list is not None and (not all(lead_list) or len(set(lead_list)) != len(lead_list)):
            raise ConfigError(f"--leads {leads!r}: expected distinct lead names separated by commas, e.g. MLII,V1")
        check_out(out)
        band = _band(bandpass)
        n = len(list(records_dir.glob("*.hea"))) if records_dir.is_dir() else 0
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task("records", total=n)
            beats, report = prepare_records(records_dir, method=method, channel=channel, leads=lead_list,
                                            reference=reference, reference_window=reference_window,
                                            annotator=annotator,
                                            filter_band=band,
                                            before=before, after=after, rate=rate, scale=scale,
                                            on_record=lambda name: progress.update(task, advance=1,
                                                                                   description=f"record {name}"))
        write_table(beats, out)
    console.print(f"wrote {out}: {report.summary()}")
    for name, why in report.skipped_records.items():
        err_console.print(f"[yellow]skipped record {name}:[/] {why}")


#: PhysioNet databases ``download`` knows: name -> (PhysioNet folder, title).
DATABASES = {"mitdb": ("mitdb/1.0.0", "MIT-BIH Arrhythmia Database"),
             "svdb": ("svdb/1.0.0", "MIT-BIH Supraventricular Arrhythmia Database")}


@app.command()
def download(
    ctx: typer.Context,
    database: Annotated[str, typer.Argument(help="mitdb or svdb.")],
    out: Annotated[Path, typer.Argument(help="Folder to write the records to (created).")],
    mirror: Annotated[str, typer.Option(help="Base address of the PhysioNet files.")] = "https://physionet.org/files/",
) -> None:
    """Download a PhysioNet database's WFDB records (.hea/.dat/.atr) with wfdb, e.g. ecgvgg download mitdb mitdb/."""
    with guard(ctx.obj):
        if database not in DATABASES:
            raise ConfigError(f"DATABASE {database!r}: choose {' or '.join(DATABASES)}")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"OUT {out}: is a file; give a folder")
        folder, title = DATABASES[database]
        import wfdb
        from wfdb.io import download as wfdb_download

        wfdb_download.set_db_index_url(mirror)
        try:
            wfdb.dl_database(folder.split("/")[0], dl_dir=str(out))
        except Exception as exc:  # noqa: BLE001 - offline, a proxy, a moved file: say where to get them by hand
            from ecgvgg.errors import DataError

            raise DataError(f"cannot download {database} from {mirror} ({type(exc).__name__}); get the {title} by "
                            f"hand from https://physionet.org/content/{folder}/ into {out}") from None
        finally:
            wfdb_download.set_db_index_url()
    console.print(f"wrote the {title} to {out}; cut its beats with: ecgvgg prepare {out} -o {database}_beats.parquet")


def _band(bandpass: Optional[str]) -> Optional[tuple[float, float]]:
    """``--bandpass LOW,HIGH`` as two numbers, or None."""
    if not bandpass:
        return None
    try:
        low, high = (float(v) for v in bandpass.split(","))
    except ValueError:
        raise ConfigError(f"--bandpass {bandpass!r}: expected LOW,HIGH in Hz") from None
    return low, high


def _parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    from ecgvgg.config import parse_yaml

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
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a value: key.path=value (repeatable).")] = None,
) -> None:
    """Run every combination of the grid as child runs of one parent run; print them by val macro-F1.

    Exits 3 only when every combination collapsed.
    """
    from ecgvgg.config import load_config
    from ecgvgg.report import sweep_table
    from ecgvgg.runner import check
    from ecgvgg.search import check_grid, grid_configs
    from ecgvgg.search import sweep as run_sweep

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
    storage: Annotated[Optional[str], typer.Option(
        "--storage", help="Optuna storage: a database URL, or a journal file (default mlruns/optuna/STUDY.log).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Best configuration YAML (default beside the store).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a value: key.path=value (repeatable).")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help="Sampler seed, for a reproducible single-worker search (default: training.seed mixed with the process "
             "id, so that workers sharing a study explore differently).")] = None,
) -> None:
    """Search hyperparameters with Optuna (TPE, median pruning on validation macro-F1), one child run per trial.

    Several processes started with the same --study share one search through its storage.
    """
    from ecgvgg.config import load_config
    from ecgvgg.files import check_out
    from ecgvgg.runner import check
    from ecgvgg.search import tune as run_tune
    from ecgvgg.tuning import default_storage, load_space, sampler_seed

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
        best = run_tune(cfg, dims, planned, trials, name, where, out, sampler_seed(cfg.training.seed, seed), space,
                        on_run=inv.run_opened)
    console.print(best)


@app.command()
def runs(
    ctx: typer.Context,
    experiment: Annotated[Optional[str], typer.Option(help="Only this experiment.")] = None,
    sort: Annotated[Optional[str], typer.Option(help="Sort by this column, best first (e.g. macro_f1, seconds).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the table (.md or .csv).")] = None,
    stale: Annotated[bool, typer.Option("--stale", help="Only runs left RUNNING by a process that is gone.")] = False,
    close_stale: Annotated[bool, typer.Option("--close-stale",
                                              help="End the stale runs as KILLED (then --resume can continue them).")] = False,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow store (default: as for run).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 100,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw macro-F1 with its interval against time (.png).")] = None,
) -> None:
    """One row per run: verdict, sampler, model, parameters, time, epochs, scores with interval, recall, baseline."""
    from ecgvgg.config import TrackingConfig
    from ecgvgg.files import check_out, write_text

    with guard(ctx.obj):
        for path, suffixes in ((out, (".md", ".csv")), (plot, (".png",))):
            if path is not None:
                check_out(path, suffixes=suffixes)
        uri = TrackingConfig(uri=tracking_uri).resolved_uri()
        from ecgvgg.runs import collect_runs, to_markdown

        frame = collect_runs(uri, experiment, stale_only=stale, close_stale=close_stale, sort=sort, limit=limit)
        if out is not None:
            write_text(to_markdown(frame) if out.suffix.lower() == ".md" else frame.to_csv(index=False), out)
        if plot is not None:
            from ecgvgg.figures import runs_figure, write_figure

            write_figure(runs_figure(frame, f"experiment {experiment}" if experiment else uri), plot)
    if (stale or close_stale) and not len(frame):
        console.print(f"no stale runs in {escape(uri)}: every run marked RUNNING is held by a live process",
                      soft_wrap=True)
        return
    _print_runs(frame, uri, close_stale, out, plot)


def _print_runs(frame: Any, uri: str, closed: bool, out: Optional[Path], plot: Optional[Path]) -> None:
    """The runs as a Rich table on a terminal, else as Markdown; then what STALE means and what was written."""
    from ecgvgg.report import runs_table
    from ecgvgg.runs import to_markdown

    if console.is_terminal:
        console.print(runs_table(frame, uri, console.width))
    else:  # piped or redirected: a Markdown table, one line per run, never wrapped
        print(to_markdown(frame), end="", flush=True)
    if (frame["status"] == "STALE").any():
        console.print("STALE: MLflow shows the run as RUNNING but no live process holds it (killed, crashed); "
                      "ecgvgg runs --close-stale ends such runs as KILLED, and --resume continues one", soft_wrap=True)
    if closed and len(frame):
        console.print(f"marked {len(frame)} stale run(s) KILLED; continue one with ecgvgg run CONFIG --resume RUN_ID",
                      soft_wrap=True)
    for path in (out, plot):
        if path is not None:
            console.print(f"wrote {len(frame)} runs to {escape(str(path))}", soft_wrap=True)


#: One line per command in ``ecgvgg --help``.
SUMMARIES = {
    "run": "Train and score a pipeline in one MLflow run.",
    "evaluate": "Score a saved model on a labelled table.",
    "predict": "Write each beat's predicted class and probabilities.",
    "explain": "Grad-CAM: where in each beat the model looks.",
    "export": "Export a model to ONNX, SavedModel or LiteRT.",
    "prepare": "Cut annotated WFDB records into a beats table.",
    "download": "Download MIT-BIH records from PhysioNet.",
    "annotate": "Find and classify every beat of raw recordings.",
    "sweep": "Run every combination of a grid.",
    "tune": "Search hyperparameters with Optuna.",
    "runs": "List the runs of an MLflow store.",
}
#: Examples shown at the end of a command's help.
EXAMPLES = {
    "run": ["ecgvgg run pipelines/adasyn_vgg.yaml",
            "ecgvgg run pipelines/adasyn_vgg.yaml --set training.epochs=5 --set split.folds=5"],
    "evaluate": ["ecgvgg evaluate --run 1a2b3c4d beats.parquet"],
    "predict": ["ecgvgg predict --run 1a2b3c4d beats.parquet -o predictions.csv"],
    "explain": ["ecgvgg explain beats.parquet --run 1a2b3c4d -o why/ --per-class 50"],
    "export": ["ecgvgg export --run 1a2b3c4d --format onnx -o model.onnx"],
    "prepare": ["ecgvgg prepare mitdb/ -o mitdb_beats.parquet",
                "ecgvgg prepare mitdb/ -o beats.parquet --method window --leads MLII,V1 --reference record"],
    "download": ["ecgvgg download mitdb mitdb/"],
    "annotate": ["ecgvgg annotate mitdb/100 -o labels/", "ecgvgg annotate mitdb/100 -o labels/ --reference atr",
                 "ecgvgg annotate holter.csv --fs 250 -o labels/ --model run:1a2b3c4d"],
    "sweep": ["ecgvgg sweep pipelines/adasyn_vgg.yaml --grid resampling.sampler=adasyn,smote,none"],
    "tune": ["ecgvgg tune pipelines/adasyn_vgg.yaml --space pipelines/tune_space.yaml --trials 20"],
    "runs": ["ecgvgg runs", "ecgvgg runs --out runs.csv"],
}
#: Placeholders by parameter name; other parameters are named by their type (N, NUMBER, PATH) or in capitals.
METAVARS = {"set_": "KEY=VALUE", "grid": "KEY=V1,V2,...", "run_id": "RUN_ID", "tracking_uri": "URI",
            "bandpass": "LOW,HIGH", "leads": "LEAD,LEAD", "rows": "ROWS", "resume": "RUN_ID", "fmt": "FORMAT",
            "label_column": "COLUMN", "group_column": "COLUMN", "data": "TABLE", "records_dir": "FOLDER",
            "inputs": "RECORDING", "reference": "EXT", "fs": "HZ", "model": "MODEL"}


def _polish_help() -> None:
    """Give every command a one-line summary and examples, and every parameter a readable placeholder."""
    import inspect
    import typing

    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        info.short_help = info.short_help or SUMMARIES.get(name)
        if name in EXAMPLES and not info.epilog:
            info.epilog = "Examples:\n\n" + "\n\n".join(f"  {e}" for e in EXAMPLES[name])
        hints = typing.get_type_hints(info.callback, include_extras=True)
        for pname in inspect.signature(info.callback).parameters:
            hint = hints.get(pname)
            extras = getattr(hint, "__metadata__", ())
            kind = typing.get_args(hint)[0] if extras else hint
            kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind) \
                if typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", ())) else kind
            if kind is bool:
                continue
            for param in extras:
                if isinstance(param, typer.models.ArgumentInfo) and param.metavar is None:
                    param.metavar = METAVARS.get(pname, pname.upper())
                elif hasattr(param, "metavar") and param.metavar is None:
                    param.metavar = METAVARS.get(pname) or {int: "N", float: "NUMBER", Path: "PATH"}.get(
                        typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind, pname.upper())
        # the evaluated hints, whose parameter objects now carry the placeholders, are what Typer reads
        info.callback.__annotations__ = hints


_polish_help()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

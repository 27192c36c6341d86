"""The ``ecgvgg`` command: run, evaluate, predict and sweep pipelines.

Exit status: 0 success, 2 bad config or bad data (one line, no traceback unless ``--debug``),
3 the model collapsed (predicts one class for almost everything, or never finds a class).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from ecgvgg.errors import ConfigError, DataError

EXIT_OK, EXIT_BAD_INPUT, EXIT_COLLAPSED = 0, 2, 3

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Train and compare VGG16-style ECG heartbeat classifiers without leaks or silent collapse.")
console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)
_state: dict[str, Any] = {"debug": False, "verbose": False, "resume": None}


def _print_version(value: bool) -> None:
    if value:
        from ecgvgg import __version__

        print(f"ecgvgg {__version__}")
        raise typer.Exit()


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", help="Show TensorFlow's start-up output.")] = False,
         version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
         ) -> None:
    """Leak-safe training and comparison of VGG16-style heartbeat classifiers."""
    _state.update(debug=debug, verbose=verbose, resume=None, study=None)
    for out in (console, err_console):  # without a terminal, lines are never hard-wrapped at 80 columns
        out.soft_wrap = not out.is_terminal
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep --json output clean
    warnings.showwarning = _show_warning


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: Optional[str] = None) -> None:
    """Print a warning as one line, without the source line that Python adds."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    err_console.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)


def _one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception's message as one line of at most ``limit`` characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(lines) > 1 and not text.endswith((":", "(")):
        text += " ..."
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_tensorflow() -> None:
    """Import TensorFlow and look for GPUs once, keeping its C++ start-up chatter off the terminal.

    TensorFlow writes oneDNN and CUDA notices straight to file descriptor 2 while it loads; they
    are hidden unless ``--verbose``. Called only after the config and the data have been checked.
    """
    if _state["verbose"] or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that a running MLflow run is closed as KILLED."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextmanager
def _guard() -> Iterator[None]:
    """Turn bad input into exit status 2 with one clear line, and SIGTERM into a clean interrupt."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        yield
    except typer.Exit:
        raise
    except (DataError, ConfigError) as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {escape(_one_line(exc, 1000))}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt as exc:
        run_id = getattr(exc, "run_id", None)
        if _state.get("study"):
            err_console.print(f"[bold red]interrupted[/]: the finished trials stay in study "
                              f"{escape(_state['study'])}; the same ecgvgg tune command with --study "
                              f"{escape(_state['study'])} continues it", soft_wrap=True)
        elif run_id is None:
            err_console.print("[bold red]interrupted[/] before any run was created")
        elif _state["resume"]:
            err_console.print(f"[bold red]interrupted[/]: run {run_id} was marked KILLED; continue it with\n  "
                              f"{escape(_state['resume'])} --resume {run_id}", soft_wrap=True)
        else:
            err_console.print(f"[bold red]interrupted[/]: run {run_id} was marked KILLED", soft_wrap=True)
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
    except Exception as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]failed:[/] {type(exc).__name__}: {escape(_one_line(exc))} "
                          "(run with --debug for the traceback)", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


#: AAMI EC57 highlights supraventricular (SVEB) and ventricular (VEB) ectopic beats.
AAMI_HIGHLIGHT = {"S": "SVEB", "V": "VEB"}


def _scores_table(scores: Mapping[str, Any], names: Sequence[str], title: str) -> Table:
    """Per-class precision (+P), recall (Se), F1, false positive rate and support, as AAMI EC57 reports them."""
    from ecgvgg.metrics import aami_scores

    aami = aami_scores(scores["confusion_matrix"], names)
    table = Table(title=title, title_justify="left")
    for col in ("class", "precision (+P)", "recall (Se)", "F1", "FPR", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for i, name in enumerate(names):
        label = f"[bold]{name} ({AAMI_HIGHLIGHT[name]})[/]" if name in AAMI_HIGHLIGHT else name
        table.add_row(label, f"{scores['precision'][i]:.3f}", f"{scores['recall'][i]:.3f}",
                      f"{scores['f1'][i]:.3f}", f"{aami[name]['FPR']:.3f}", str(scores["support"][i]))
    table.add_section()
    table.add_row("macro F1", "", "", f"{scores['macro_f1']:.3f}", "")
    table.add_row("accuracy", "", "", f"{scores['accuracy']:.3f}", "")
    if "S" in names and "V" in names:
        from ecgvgg.metrics import jk_index

        jk = jk_index(scores["confusion_matrix"], names)
        table.add_row("jκ index", "", "", f"{jk['jk']:.3f}", f"κ {jk['kappa']:.3f}")
    return table


def _cv_table(result: Any) -> Table:
    """Per-class recall and F1 as mean +- sd over the folds, beside the pooled out-of-fold scores."""
    cv, scores, names = result.cv, result.test_scores, result.class_names
    table = Table(title=f"{cv['folds']}-fold cross-validation (mean ± sd over folds; out-of-fold pooled)",
                  title_justify="left")
    for col in ("class", "recall", "F1", "out-of-fold recall", "out-of-fold F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")

    def pm(metric: str, name: str) -> str:
        mean_sd = cv[metric].get(name)
        return f"{mean_sd[0]:.3f}±{mean_sd[1]:.3f}" if mean_sd else "-"

    for i, name in enumerate(names):
        label = f"[bold]{escape(name)} ({AAMI_HIGHLIGHT[name]})[/]" if name in AAMI_HIGHLIGHT else escape(name)
        table.add_row(label, pm("recall", name), pm("f1", name), f"{scores['recall'][i]:.3f}",
                      f"{scores['f1'][i]:.3f}", str(scores["support"][i]))
    table.add_section()
    mean, sd = cv["macro_f1"]
    table.add_row("macro F1", "", f"{mean:.3f}±{sd:.3f}", "", f"{scores['macro_f1']:.3f}", "")
    return table


def _print_summary(result: Any) -> None:
    """The interval, the baseline comparison, the protocol and any class missed on part of the held-out rows."""
    what = "out-of-fold macro-F1" if result.cv else "test macro-F1"
    f1 = result.test_scores["macro_f1"]
    if result.ci is not None:
        by = "groups" if result.split_kind.startswith(("grouped", "inter-patient")) else "beats"
        console.print(f"{what} {f1:.3f}, 95% bootstrap interval {result.ci[0]:.3f}-{result.ci[1]:.3f} "
                      f"(resampling test {by}: it covers the sampling of these test rows, not the choice of "
                      "split or the training run)")
    if not result.cv:
        console.print("one split: another split or seed can move this score by more than its interval; for a "
                      "number to report, cross-validate: --set split.folds=5")
    if result.baseline_macro_f1 is not None:
        b = result.baseline_macro_f1
        console.print(f"VGG16 vs random forest: {f1:.3f} vs {b:.3f} ({f1 - b:+.3f})")
    console.print(f"split: {escape(result.split_kind)}")
    for name, where in result.missed.items():
        err_console.print(f"[yellow]warning:[/] class {escape(name)} was never found on {escape(where)}; "
                          "the model finds it elsewhere, so this is no collapse, but its score there is 0")


def _collapse_box(reason: str) -> None:
    err_console.print(Panel(f"[bold]The model collapsed:[/] {escape(reason)}.\n"
                            "Its accuracy means nothing: check class weights, the sampler, the learning rate.",
                            title="[bold red]COLLAPSED MODEL[/]", border_style="red"))


def _progress_callback(progress: Any, epochs: int) -> Any:
    """A Keras callback that drives a rich progress bar over epochs and batches."""
    import keras

    class RichProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs: Optional[dict] = None) -> None:
            if hasattr(self, "epoch_task"):  # a later fold of a cross-validated run
                progress.reset(self.epoch_task, description="epochs")
                progress.reset(self.batch_task, total=self.params.get("steps") or None)
                return
            self.epoch_task = progress.add_task("epochs", total=epochs)
            self.batch_task = progress.add_task("batches", total=self.params.get("steps") or None)

        def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
            progress.reset(self.batch_task, description=f"epoch {epoch + 1}")

        def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
            progress.advance(self.batch_task)

        def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
            f1 = (logs or {}).get("val_macro_f1")
            progress.update(self.epoch_task, completed=epoch + 1,
                            description=f"epochs (val macro-F1 {f1:.3f})" if f1 is not None else "epochs")
            if not err_console.is_terminal:  # CI logs, nohup: the bars vanish, so leave one line per epoch
                loss = (logs or {}).get("loss")
                print(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, val macro-F1 {f1:.3f}"
                      if loss is not None and f1 is not None else f"epoch {epoch + 1}/{epochs}",
                      file=sys.stderr, flush=True)

    return RichProgress()


def _run_one(cfg: Any, parent_run_id: Optional[str] = None, resume_run_id: Optional[str] = None,
             data: Any = None, **hooks: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ecgvgg.pipeline import run_pipeline

    _load_tensorflow()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        result = run_pipeline(cfg, callbacks=[_progress_callback(progress, cfg.training.epochs)],
                              parent_run_id=parent_run_id, resume_run_id=resume_run_id, data=data, **hooks)
    if result.cv is None:  # one line per run, terminal or not
        best = f", best epoch {result.best_epoch}" if result.best_epoch else ""
        console.print(f"{escape(result.run_name)}: trained {result.epochs_run} epochs{best} "
                      f"(val macro-F1 {result.val_scores.get('macro_f1', 0.0):.3f})")
    return result


def _full_run_ids(cfg: Any) -> Any:
    """``cfg`` with a ``model.weights: run:PREFIX`` expanded to the run's full id."""
    from ecgvgg.config import RUN_PREFIX

    weights = cfg.model.weights
    if not (weights and weights.startswith(RUN_PREFIX)):
        return cfg
    from ecgvgg.inference import resolve_run_id

    full = resolve_run_id(cfg.tracking.resolved_uri(), weights[len(RUN_PREFIX):], "model.weights: run:")
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"weights": RUN_PREFIX + full})})


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a value: key.path=value.")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue this interrupted run.")] = None,
) -> None:
    """Run a pipeline in one MLflow run; print the run id, the test per-class table and the model path."""
    from ecgvgg.config import load_config
    from ecgvgg.pipeline import check_data

    with _guard():
        cfg = _full_run_ids(load_config(config, set_ or []))
        if cfg.split.folds and resume:
            raise ConfigError("--resume: cross-validated runs (split.folds) cannot be resumed; start them again")
        if resume:
            from ecgvgg.inference import resolve_run_id

            resume = resolve_run_id(cfg.tracking.resolved_uri(), resume, "--resume")
        data = check_data(cfg)  # bad data and data-dependent settings: exit 2 before TensorFlow or MLflow load
        if not cfg.split.folds:
            _state["resume"] = "ecgvgg run " + " ".join([str(config), *(f"--set {item}" for item in set_ or [])])
        result = _run_one(cfg, resume_run_id=resume, data=data)
    console.print(f"run id: [bold]{result.run_id}[/] {escape(result.run_name)} (experiment "
                  f"{escape(cfg.tracking.experiment)}, store {escape(cfg.tracking.resolved_uri())})")

    if result.cv:
        console.print(_cv_table(result))
        console.print(_scores_table(result.test_scores, result.class_names, "out-of-fold, pooled (AAMI EC57)"))
    else:
        console.print(_scores_table(result.test_scores, result.class_names, "test split"))
    _print_summary(result)
    console.print(f"model: {escape(result.model_uri)}  (local copy: {escape(str(result.model_path))})")
    if result.collapsed:
        _collapse_box(result.collapse_reason or "collapsed")
        raise typer.Exit(EXIT_COLLAPSED)


@app.command()
def evaluate(
    data: Annotated[Path, typer.Argument(help="Labelled beats (CSV or Parquet).")],
    run_id: Annotated[Optional[str], typer.Option("--run", help="Score the model logged by this MLflow run.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="Score this .keras model file.")] = None,
    label_column: Annotated[Optional[str], typer.Option(
        help="Label column of a table with a header (default: the one the model was trained with).")] = None,
    group_column: Annotated[Optional[str], typer.Option(
        help="Group column to ignore (default: the one the model was trained with, when the table has it).")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow store for --run.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print scores as JSON.")] = False,
) -> None:
    """Score a saved model on another table; print the per-class table or JSON.

    The table is read as the model's training table was (label column, group column, header)
    unless the options say otherwise.
    """
    from ecgvgg.data import load_xy

    with _guard():
        data = _data_file(data)
        loaded = _load(run_id, model, tracking_uri)
        label, group, header = _table_settings(loaded, data, label_column, group_column)
        X, y, groups = load_xy(data, label_column=label, group_column=group, header=header, classes=loaded.classes,
                               label_option="--label-column")
        _warn_seen_groups(loaded, data, groups)
        scores = loaded.score(X, y)
    names = loaded.class_names
    if as_json:
        by_class = {m: {names[i]: scores[m][c] for i, c in enumerate(loaded.classes)}
                    for m in ("precision", "recall", "f1", "support")}
        from ecgvgg.metrics import aami_scores

        print(json.dumps({"macro_f1": scores["macro_f1"], "accuracy": scores["accuracy"], **by_class,
                          "aami_ec57": aami_scores(scores["confusion_matrix"], names),
                          "confusion_matrix": scores["confusion_matrix"], "class_names": names}, indent=2))
    else:
        console.print(_scores_table(scores, names, f"{data}"))


def _data_file(data: Path) -> Path:
    """The table to read: ``sample:NAME`` names a bundled sample; a missing file is reported before TensorFlow loads."""
    from ecgvgg.config import data_path
    from ecgvgg.errors import DataError

    data = data_path(str(data))
    if not data.exists():
        raise DataError(f"{data}: no such file")
    return data


def _warn_seen_groups(loaded: Any, data: Path, groups: Any) -> None:
    """Warn when the table holds groups (records, segments) that the model was trained or validated on."""
    seen = set((loaded.data or {}).get("train_groups") or ())
    if groups is None or not seen:
        return
    mine = {str(g) for g in groups}
    overlap = sorted(mine & seen)
    if overlap:
        warnings.warn(f"{data}: {len(overlap)} of its {len(mine)} {loaded.data.get('group_column') or 'group'} "
                      f"values ({', '.join(overlap[:5])}{', ...' if len(overlap) > 5 else ''}) were in the model's "
                      "training or validation split: its scores on them are optimistic", stacklevel=2)


def _table_settings(loaded: Any, data: Path, label_column: Optional[str],
                    group_column: Optional[str]) -> tuple[str, Optional[str], Optional[bool]]:
    """Label column, group column and header for reading ``data``: the options, else the model's training table's."""
    trained = loaded.data or {}
    label = label_column or trained.get("label_column") or "label"
    group = group_column
    if group is None and trained.get("group_column"):
        from ecgvgg.data import has_column

        group = trained["group_column"] if has_column(data, trained["group_column"]) else None
    header = trained.get("header")
    return label, group, header if isinstance(header, bool) else None


def _load(run_id: Optional[str], model: Optional[Path], tracking_uri: Optional[str]) -> Any:
    from ecgvgg.inference import load_model

    if (run_id is None) == (model is None):
        raise ConfigError("give exactly one of --run RUN_ID or --model PATH")
    if run_id is None:
        _load_tensorflow()
        return load_model(model)
    from ecgvgg.config import TrackingConfig
    from ecgvgg.tracking import sqlite_path

    uri = TrackingConfig(uri=tracking_uri).resolved_uri()
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # never create a store for a read
        raise ConfigError(f"--run {run_id}: no MLflow store at {db.resolve()} (from {uri}); "
                          "pass --tracking-uri or run from the folder that holds mlruns/")
    from ecgvgg.inference import resolve_run_id

    run_id = resolve_run_id(uri, run_id)  # before TensorFlow: an unknown or ambiguous id is reported at once
    _load_tensorflow()
    import mlflow

    mlflow.set_tracking_uri(uri)
    return load_model(run_id=run_id)


def _check_out(out: Path, data: Optional[Path] = None) -> None:
    """Refuse an output path that cannot be written, before any work: wrong suffix, a folder, the input itself."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name")
    if out.suffix.lower() not in {".csv", ".parquet"}:
        raise ConfigError(f"--out {out}: use a .csv or .parquet file name")
    if data is not None and out.exists() and data.exists() and out.resolve() == data.resolve():
        raise ConfigError(f"--out {out}: is the input file; write the output elsewhere")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write in {parent}")
    if out.exists() and not os.access(out, os.W_OK):
        raise ConfigError(f"--out {out}: the file is not writable")


def _write_table(frame: Any, out: Path) -> None:
    """Write a DataFrame as CSV or Parquet through a temporary file, so no half-written output remains."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    try:
        frame.to_csv(tmp, index=False) if out.suffix.lower() == ".csv" else frame.to_parquet(tmp, index=False)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@app.command()
def predict(
    data: Annotated[Path, typer.Argument(help="Beats to classify (CSV or Parquet; labels optional).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.csv or .parquet).")],
    model: Annotated[Optional[Path], typer.Option("--model", help=".keras model file.")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run", help="Use the model logged by this MLflow run.")] = None,
    label_column: Annotated[Optional[str], typer.Option(
        help="Label column to ignore if present (default: the one the model was trained with).")] = None,
    group_column: Annotated[Optional[str], typer.Option(
        help="Group column to ignore (default: the one the model was trained with, when the table has it).")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow store for --run.")] = None,
) -> None:
    """Write predicted classes and class probabilities, one row per beat."""
    import pandas as pd

    from ecgvgg.data import load_x, other_columns

    with _guard():
        data = _data_file(data)
        _check_out(out, data)
        loaded = _load(run_id, model, tracking_uri)
        label, group, header = _table_settings(loaded, data, label_column, group_column)
        X = load_x(data, length=loaded.length, label_column=label, group_column=group, header=header)
        kept = other_columns(data, (loaded.data or {}).get("features") or [str(c) for c in X.columns],
                             length=loaded.length, group_column=group, header=header)
        if group and group in kept:
            _warn_seen_groups(loaded, data, kept[group])
        frame = pd.concat([kept.drop(columns=[c for c in kept.columns if c in ("prediction", "class_name")]),
                           loaded.predict_frame(X)], axis=1)
        _write_table(frame, out)
    console.print(f"wrote {len(frame)} predictions to {escape(str(out))}")


@app.command()
def prepare(
    records_dir: Annotated[Path, typer.Argument(help="Folder of WFDB records (.hea/.dat/.atr).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output beats file (.parquet or .csv).")],
    method: Annotated[str, typer.Option(help="kachuee (125 Hz, 1.2 x median RR, 187 samples) or window.")] = "kachuee",
    channel: Annotated[str, typer.Option(help="Signal name to use (first signal if absent).")] = "MLII",
    before: Annotated[float, typer.Option(help="window: seconds before the R peak.")] = 0.25,
    after: Annotated[float, typer.Option(help="window: seconds after the R peak.")] = 0.45,
    rate: Annotated[float, typer.Option(help="window: sampling rate of the cut beats in Hz.")] = 125.0,
    bandpass: Annotated[Optional[str], typer.Option(help="Band-pass filter LOW,HIGH in Hz, e.g. 0.5,40.")] = None,
    scale: Annotated[str, typer.Option(help="none; record: each record divided by its median R-peak height; "
                                            "window: each 10 s scaled to [0, 1] (as kachuee).")] = "none",
) -> None:
    """Cut annotated beats from WFDB records into one row per beat with label, record and sample columns."""
    from rich.progress import Progress

    from ecgvgg.records import prepare_records

    with _guard():
        if method not in ("kachuee", "window"):
            raise ConfigError(f"--method {method!r}: choose kachuee or window")
        if scale not in ("none", "record", "window"):
            raise ConfigError(f"--scale {scale!r}: choose none, record or window")
        if not (rate > 0 and before >= 0 and after > 0):
            raise ConfigError("--rate and --after must be > 0 and --before >= 0")
        _check_out(out)
        band = None
        if bandpass:
            try:
                low, high = (float(v) for v in bandpass.split(","))
            except ValueError:
                raise ConfigError(f"--bandpass {bandpass!r}: expected LOW,HIGH in Hz") from None
            band = (low, high)
        n = len(list(records_dir.glob("*.hea"))) if records_dir.is_dir() else 0
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task("records", total=n)
            beats, report = prepare_records(records_dir, method=method, channel=channel, filter_band=band,
                                            before=before, after=after, rate=rate, scale=scale,
                                            on_record=lambda name: progress.update(task, advance=1,
                                                                                   description=f"record {name}"))
        _write_table(beats, out)
    console.print(f"wrote {out}: {report.summary()}")
    for name, why in report.skipped_records.items():
        err_console.print(f"[yellow]skipped record {name}:[/] {why}")


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
    config: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    grid: Annotated[list[str], typer.Option("--grid", "-g", help="key.path=v1,v2,... (repeatable).")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a value: key.path=value.")] = None,
) -> None:
    """Run every combination of the grid as child runs of one parent run; print them by val macro-F1.

    Exits 3 only when every combination collapsed.
    """
    from ecgvgg.config import load_config
    from ecgvgg.pipeline import check_data, grid_configs

    with _guard():
        cfg = load_config(config, set_ or [])
        parsed = _parse_grid(grid)
        combos = grid_configs(cfg, parsed)
        loaded: dict[str, Any] = {}
        for combo, child_cfg in combos:  # every combination's data and settings, before any run exists
            key = child_cfg.data.model_dump_json()
            try:
                loaded[key] = check_data(child_cfg, loaded.get(key))
            except (DataError, ConfigError) as exc:
                raise type(exc)(f"--grid {', '.join(f'{k}={v}' for k, v in combo.items())}: {exc}") from None
        _load_tensorflow()
        import mlflow

        from ecgvgg import tracking

        experiment_id = tracking.configure(cfg.tracking.resolved_uri(), cfg.tracking.experiment)
        rows = []
        with tracking.start_run(experiment_id, cfg.tracking.run_name or "sweep") as parent:
            mlflow.set_tag("sweep", "true")
            mlflow.log_param("grid", json.dumps(parsed))
            for combo, child_cfg in combos:
                console.print(f"[bold]combination[/] {combo}")
                result = _run_one(child_cfg, parent_run_id=parent.info.run_id,
                                  data=loaded[child_cfg.data.model_dump_json()])
                rows.append((combo, result))
    rows.sort(key=lambda r: r[1].val_scores.get("macro_f1", 0.0), reverse=True)
    table = Table(title=f"sweep {parent.info.run_id}", title_justify="left")
    for col in ("run", *_grid_keys(rows), "val macro-F1", "test macro-F1", "collapsed"):
        table.add_column(col)
    for combo, r in rows:
        table.add_row(r.run_id[:8], *(str(v) for v in combo.values()), f"{r.val_scores.get('macro_f1', 0):.3f}",
                      f"{r.test_scores['macro_f1']:.3f}", "[red]yes[/]" if r.collapsed else "no")
    console.print(table)
    if rows and all(r.collapsed for _, r in rows):
        _collapse_box("every combination of the sweep collapsed")
        raise typer.Exit(EXIT_COLLAPSED)


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML file: the base configuration.")],
    space: Annotated[Path, typer.Option("--space", help="Search space YAML: key: {low, high[, log|step]} or [choices].")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="Trials for this process to run.")] = 20,
    study: Annotated[Optional[str], typer.Option("--study", help="Study name (shared by processes that use it).")] = None,
    storage: Annotated[Optional[str], typer.Option(
        "--storage", help="Optuna storage: a database URL, or a journal file (default mlruns/optuna/STUDY.log).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Best configuration YAML (default beside the store).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a value: key.path=value.")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help="Sampler seed, for a reproducible single-worker search (default: training.seed mixed with the process "
             "id, so that workers sharing a study explore differently).")] = None,
) -> None:
    """Search hyperparameters with Optuna (TPE, median pruning on validation macro-F1), one child run per trial.

    Several processes started with the same --study share one search through its storage.
    """
    from ecgvgg.config import load_config
    from ecgvgg.pipeline import check_data
    from ecgvgg.tuning import default_storage, load_space

    with _guard():
        cfg = load_config(config, set_ or [])
        dims = load_space(space, cfg)
        data = check_data(cfg)
        name = study or f"{cfg.tracking.experiment}-tune"
        _state["study"] = name
        uri = cfg.tracking.resolved_uri()
        where = storage or default_storage(uri, name)
        out = out or Path(default_storage(uri, name)).with_name(f"{name}-best.yaml")
        _check_out(out.with_suffix(".csv"))
        _load_tensorflow()
        from ecgvgg.tuning import sampler_seed

        best = _tune(cfg, dims, data, trials, name, where, out, sampler_seed(cfg.training.seed, seed), space)
    console.print(best)


def _tune(cfg: Any, dims: Any, data: Any, trials: int, name: str, storage: str, out: Path, seed: int,
          space_path: Path) -> Table:
    """Run this process's trials of the study inside one parent MLflow run; return the table of the best trials."""
    import uuid

    import mlflow
    import optuna

    from ecgvgg import tracking
    from ecgvgg.errors import Pruned
    from ecgvgg.pipeline import check_data
    from ecgvgg.tuning import apply, best_config_yaml, open_study, pruning_hooks, suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(name, storage, seed=seed, warmup=cfg.training.collapse_warmup)
    experiment_id = tracking.configure(cfg.tracking.resolved_uri(), cfg.tracking.experiment)
    with tracking.start_run(experiment_id, f"tune-{name}-{uuid.uuid4().hex[:6]}") as parent:
        mlflow.set_tags({"study": name, "tune": "true", "optuna_storage": storage})
        mlflow.log_params({"trials": trials, "sampler_seed": seed,
                           "space": space_path.read_text(encoding="utf-8")[:6000]})
        mlflow.log_artifact(str(space_path))

        def objective(trial: Any) -> float:
            values = suggest(trial, dims)
            console.print(f"[bold]trial {trial.number}[/] {escape(str(values))}")
            trial_cfg = apply(cfg, values, source=f"trial {trial.number}")
            trial_data = check_data(trial_cfg, data if trial_cfg.data == cfg.data else None)
            try:
                result = _run_one(trial_cfg, parent_run_id=parent.info.run_id, data=trial_data,
                                  tags={"study": name, "trial": str(trial.number)},
                                  **pruning_hooks(trial, trial_cfg.split.folds))
            except Pruned as exc:
                console.print(f"trial {trial.number} {exc}")
                raise optuna.TrialPruned(str(exc)) from None
            trial.set_user_attr("run_id", result.run_id)
            return result.cv["macro_f1"][0] if result.cv else float(result.val_scores.get("macro_f1", 0.0))

        study.optimize(objective, n_trials=trials, catch=(ConfigError, DataError))
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        states = [t.state for t in study.trials]
        mlflow.log_metrics({"trials_complete": len(done), "trials_pruned": states.count(optuna.trial.TrialState.PRUNED),
                            "trials_failed": states.count(optuna.trial.TrialState.FAIL)})
        if not done:
            raise ConfigError(f"study {name}: no trial completed (see the child runs)")
        mlflow.log_metric("best_value", study.best_value)
        _write_text(best_config_yaml(cfg, study.best_params), out)
        mlflow.log_artifact(str(out))
        _log_study_plots(study)
    table = Table(title=f"study {escape(name)}: best trials ({len(done)} complete of {len(study.trials)}; "
                        f"best configuration in {escape(str(out))})", title_justify="left")
    for col in ("trial", "objective", "run", *(k.split(".")[-1] for k in dims)):
        table.add_column(col)
    for t in sorted(done, key=lambda t: t.value, reverse=True)[:5]:
        table.add_row(str(t.number), f"{t.value:.3f}", str(t.user_attrs.get("run_id", ""))[:8],
                      *(escape(f"{v:.3g}" if isinstance(v := t.params.get(k, ""), float) else str(v)) for k in dims))
    return table


def _log_study_plots(study: Any) -> None:
    """Optuna's optimisation history and parameter importances as artifacts of the active run."""
    import mlflow
    from optuna.visualization import matplotlib as plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, plot in (("optimization_history.png", plots.plot_optimization_history),
                           ("param_importances.png", plots.plot_param_importances)):
            try:
                axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few trials for importances
                continue
            figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            mlflow.log_figure(figure, name)


@app.command()
def runs(
    experiment: Annotated[Optional[str], typer.Option(help="Only this experiment.")] = None,
    sort: Annotated[Optional[str], typer.Option(help="Sort by this column, best first (e.g. macro_f1, seconds).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the table (.md or .csv).")] = None,
    stale: Annotated[bool, typer.Option("--stale", help="Only runs left RUNNING by a process that is gone.")] = False,
    close_stale: Annotated[bool, typer.Option("--close-stale",
                                              help="End the stale runs as KILLED (then --resume can continue them).")] = False,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow store (default: as for run).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 100,
) -> None:
    """One row per run: verdict, sampler, model, parameters, time, epochs, scores with interval, recall, baseline."""
    from ecgvgg.config import TrackingConfig
    from ecgvgg.tracking import sqlite_path

    with _guard():
        if out is not None and out.suffix.lower() not in (".md", ".csv"):
            raise ConfigError(f"--out {out}: use a .md or .csv file name")
        if out is not None:
            _check_out(out.with_suffix(".csv"))
        uri = TrackingConfig(uri=tracking_uri).resolved_uri()
        db = sqlite_path(uri)
        if db is not None and not db.is_file():
            raise ConfigError(f"no MLflow store at {db.resolve()} (from {uri}); pass --tracking-uri")
        from mlflow.tracking import MlflowClient

        from ecgvgg import tracking
        from ecgvgg.runs import runs_frame, to_markdown

        client = MlflowClient(uri)
        experiments = [e.experiment_id for e in client.search_experiments()
                       if experiment is None or e.name == experiment]
        if experiment is not None and not experiments:
            names = sorted(e.name for e in client.search_experiments())
            raise ConfigError(f"--experiment {experiment}: no such experiment in {uri} (experiments: "
                              f"{', '.join(names) or 'none'})")
        dead = {r.info.run_id for r in tracking.stale_runs(uri)}
        frame = runs_frame(client, experiments, stale=dead, limit=limit)
        if stale or close_stale:
            frame = frame[frame["status"] == "STALE"]
        if close_stale:
            for run_id in [r for r in dead if r in set(frame["run_id"])]:
                tracking.mark_killed(uri, run_id)
            frame = frame.assign(status="KILLED")
        if sort is not None:
            if sort not in frame.columns:
                raise ConfigError(f"--sort {sort}: no such column (columns: {', '.join(frame.columns)})")
            frame = frame.sort_values(sort, ascending=sort in ("seconds", "params_total", "params_trainable",
                                                               "params_non_trainable"),
                                      na_position="last")
        if out is not None:
            _write_text(to_markdown(frame) if out.suffix.lower() == ".md" else frame.to_csv(index=False), out)
    if (stale or close_stale) and not len(frame):
        console.print(f"no stale runs in {escape(uri)}: every run marked RUNNING is held by a live process",
                      soft_wrap=True)
        return
    if console.is_terminal:
        console.print(_runs_table(frame, uri))
    else:  # piped or redirected: a Markdown table, one line per run, never wrapped
        print(to_markdown(frame), end="", flush=True)
    if (frame["status"] == "STALE").any():
        console.print("STALE: MLflow shows the run as RUNNING but no live process holds it (killed, crashed); "
                      "ecgvgg runs --close-stale ends such runs as KILLED, and --resume continues one", soft_wrap=True)
    if close_stale and len(frame):
        console.print(f"marked {len(frame)} stale run(s) KILLED; continue one with ecgvgg run CONFIG --resume RUN_ID",
                      soft_wrap=True)
    if out is not None:
        console.print(f"wrote {len(frame)} runs to {escape(str(out))}", soft_wrap=True)


def _runs_table(frame: Any, uri: str) -> Table:
    """The runs as a Rich table for a terminal."""
    table = Table(title=f"runs in {escape(uri)}", title_justify="left")
    recall_cols = [c for c in frame.columns if c.startswith("recall_")]
    for col in ("id", "name", "status", "collapsed", "model", "params", "trainable", "non-trainable", "time",
                "epochs", "val F1",
                "macro-F1 [95%]", "CV mean±sd", f"recall {'/'.join(c[7:] for c in recall_cols)}", "RF"):
        table.add_column(col, no_wrap=col in ("id", "status"), overflow="fold", min_width=4)
    for row in frame.to_dict(orient="records"):
        f1 = row["macro_f1"]
        table.add_row(
            row["id"], escape(str(row["name"])), row["status"],
            "[red]yes[/]" if row["collapsed"] == "true" else "no" if row["collapsed"] == "false" else "",
            escape(f"{row['sampler']} {row['input']}"), _fmt_int(row["params_total"]),
            _fmt_int(row["params_trainable"]), _fmt_int(row["params_non_trainable"]), f"{row['seconds']}s",
            _fmt_int(row["epochs"]), _fmt(row["val_macro_f1"]),
            f"{_fmt(f1)} [{row['macro_f1_ci']}]" if row["macro_f1_ci"] else _fmt(f1), row["cv_macro_f1"],
            "/".join(f"{row[c]:.2f}" for c in recall_cols if row.get(c) == row.get(c) and row.get(c) is not None),
            _fmt(row["baseline_rf_macro_f1"]))
    return table


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _fmt(value: Any) -> str:
    return "" if _missing(value) else f"{value:.3f}"


def _fmt_int(value: Any) -> str:
    return "" if _missing(value) else f"{int(value):,}"


def _write_text(text: str, out: Path) -> None:
    """Write text through a temporary file, so no half-written output remains."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(text)
    tmp.replace(out)


def _grid_keys(rows: Sequence[tuple[dict[str, Any], Any]]) -> list[str]:
    """Column names for the swept keys."""
    return list(rows[0][0]) if rows else []


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

"""MLflow logging: params, per-epoch per-class metrics, final scores, figures, the model and collapse tags."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from ecgvgg.errors import ConfigError, Pruned

log = logging.getLogger("ecgvgg")

for _noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent", "mlflow.models.model"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def configure(uri: str, experiment: str) -> str:
    """Point MLflow at ``uri`` and return the experiment id, creating both as needed.

    For a SQLite store the database folder is created and new experiments keep their artifacts
    in ``artifacts/`` beside the database, so one folder holds a whole study.
    """
    db = sqlite_path(uri)
    artifact_location = None
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (db.parent.resolve() / "artifacts").as_uri()
    mlflow.set_tracking_uri(uri)
    # Several runs may start on a new store at once: creating its tables and the experiment is
    # serialised with a lock file beside the database.
    with _file_lock(db.with_suffix(".lock") if db is not None else None):
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        return mlflow.create_experiment(experiment, artifact_location=artifact_location)


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (no-op without a path or without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def start_run(experiment_id: str, run_name: str | None = None, run_id: str | None = None,
              nested: bool = False, lock: bool = True) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED only when the block completes; FAILED on any error, KILLED on an interrupt.

    With ``lock`` the run's lock (see :func:`run_lock`) is held while the block runs, so other
    processes can tell this live run from one whose process died.
    """
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, run_id=run_id, nested=nested)
    stack = ExitStack()
    try:
        if lock:
            stack.enter_context(run_lock(mlflow.get_tracking_uri(), run.info.run_id))
        yield run
    except Pruned:
        mlflow.set_tag("pruned", "true")
        mlflow.end_run(status="FINISHED")
        raise
    except KeyboardInterrupt as exc:
        mlflow.set_tag("ecgvgg.status", "interrupted")
        mlflow.end_run(status="KILLED")
        if getattr(exc, "run_id", None) is None:  # the innermost run: the one that can be resumed
            exc.run_id = run.info.run_id
        raise
    except BaseException as exc:
        mlflow.set_tag("ecgvgg.error", f"{type(exc).__name__}: {exc}"[:5000])
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")
    finally:
        stack.close()


def log_params(params: Mapping[str, Any]) -> None:
    """Log resolved config values as params (lists and dicts as JSON)."""
    mlflow.log_params({k: _param_text(v) for k, v in params.items()})


def log_counts(counts: Mapping[str, Mapping[int, int]], names: Sequence[str]) -> None:
    """Log class counts per split (``count_train_before_N`` ...) as params and as a JSON artifact."""
    mlflow.log_params({f"count_{split}_{names[c]}": n for split, by in counts.items() for c, n in by.items()
                       if c < len(names)})
    mlflow.log_dict({split: {names[c]: n for c, n in by.items() if c < len(names)} for split, by in counts.items()},
                    "class_counts.json")


def log_epoch(epoch: int, logs: Mapping[str, float]) -> None:
    """Log one epoch's metrics with ``step`` = epoch number (1-based)."""
    mlflow.log_metrics({k: float(v) for k, v in logs.items() if np.isscalar(v)}, step=epoch + 1)


def log_evaluation(scores: Mapping[str, Any], matrix: np.ndarray, report: str, names: Sequence[str],
                   prefix: str = "test", title: str | None = None) -> None:
    """Log final scores, AAMI EC57 metrics, the confusion matrix (PNG and JSON) and the classification report."""
    from ecgvgg.metrics import aami_scores, flat_scores

    aami = aami_scores(matrix, names)
    mlflow.log_metrics(flat_scores(scores, names, prefix))
    mlflow.log_metrics({f"{prefix}_{key}_{name}": v for name, by in aami.items()
                        for key, v in (("se", by["Se"]), ("ppv", by["+P"]), ("fpr", by["FPR"]))})
    mlflow.log_dict(aami, f"{prefix}_aami_ec57.json")
    if "S" in names and "V" in names:
        from ecgvgg.metrics import jk_index

        mlflow.log_metric(f"{prefix}_jk", jk_index(matrix, names)["jk"])
    log_confusion(matrix, names, prefix, title or f"{prefix} confusion matrix")
    mlflow.log_text(report, f"{prefix}_classification_report.txt")


def log_provenance(dataset_frame: Any, source: Path, context: str = "training") -> None:
    """Log the data as an MLflow dataset input (digest, source) and tag the ecgvgg, TensorFlow and Keras versions
    and, when run from a git checkout, its commit."""
    import mlflow.data
    from importlib import metadata as importlib_metadata

    import warnings

    with warnings.catch_warnings():  # MLflow's notices: a local path's source type, integer columns, pandas 4
        warnings.simplefilter("ignore")
        dataset = mlflow.data.from_pandas(dataset_frame, source=str(Path(source).resolve()), name=Path(source).name,
                                          targets="label")
        mlflow.log_input(dataset, context=context)
    tags = {}
    for package, tag in (("ecgvgg", "ecgvgg.version"), ("tensorflow", "tensorflow.version"), ("keras", "keras.version")):
        try:
            tags[tag] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    mlflow.set_tags(tags)


def git_commit() -> str | None:
    """The commit of the git checkout that ecgvgg runs from, or None (an installed package, no git)."""
    import subprocess

    here = Path(__file__).resolve().parent
    if not any((parent / ".git").exists() for parent in (here, *here.parents)):
        return None
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def training_curves_figure(history: Mapping[str, Sequence[float]], names: Sequence[str], title: str,
                           first_epoch: int = 1):
    """Loss, validation macro-F1 and per-class validation recall per epoch, as one matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    epochs = range(first_epoch, first_epoch + len(history.get("val_macro_f1", [])))
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if history.get(key):
            axes[0].plot(list(epochs)[: len(history[key])], history[key], label=label)
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    axes[1].plot(epochs, history.get("val_macro_f1", []), color="black")
    axes[1].set(title="validation macro-F1", xlabel="epoch", ylim=(0, 1.02))
    for name in names:
        axes[2].plot(epochs, history.get(f"val_recall_{name}", []), label=name)
    axes[2].set(title="validation recall per class", xlabel="epoch", ylim=(-0.02, 1.02))
    axes[2].legend(ncol=len(names), fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2))
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def log_confusion(matrix: np.ndarray, names: Sequence[str], prefix: str, title: str) -> None:
    """Log a confusion matrix as ``{prefix}_confusion_matrix.png`` and ``.json``."""
    mlflow.log_dict({"labels": list(names), "rows": "true", "columns": "predicted", "matrix": np.asarray(matrix).tolist()},
                    f"{prefix}_confusion_matrix.json")
    mlflow.log_figure(confusion_figure(matrix, names, title=title), f"{prefix}_confusion_matrix.png")


def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str = "confusion matrix"):
    """A matplotlib figure of the confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ConfusionMatrixDisplay(matrix, display_labels=list(names)).plot(ax=ax, colorbar=False, values_format="d")
    ax.set_title(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _run_root(uri: str) -> Path:
    """Where run folders live: ``runs/`` beside a SQLite store, else ./mlruns/runs."""
    db = sqlite_path(uri)
    return (db.parent if db is not None else Path("mlruns")) / "runs"


def local_run_dir(uri: str, run_id: str) -> Path:
    """A folder for a run's local files (checkpoints, the final model, its lock), created as needed."""
    path = _run_root(uri) / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Settings that may differ when a run is resumed (e.g. to train it for longer).
RESUMABLE_CHANGES = {"training.epochs", "tracking.run_name"}


#: The file beside a run's checkpoints that its training process holds locked while it lives.
LOCK_FILE = "run.lock"


@contextmanager
def run_lock(uri: str, run_id: str) -> Iterator[None]:
    """Hold the lock that tells a live run from a dead one (released by the OS when the process dies).

    Raises ConfigError when another live process holds it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no liveness check
        yield
        return
    path = _run_root(uri) / run_id / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise ConfigError(f"run {run_id} is still being trained by live process {pid}; "
                              "wait for it, or stop it (Ctrl-C or kill) and resume it then") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock


def is_live(uri: str, run_id: str) -> bool:
    """Whether a live process holds ``run_id``'s lock (is training it now)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return False
    path = _run_root(uri) / run_id / LOCK_FILE
    if not path.is_file():
        return False
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def run_exists(uri: str, run_id: str) -> bool:
    """Whether the store at ``uri`` has a run with this id."""
    try:
        mlflow.tracking.MlflowClient(uri).get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def clear_interrupted(run_id: str) -> None:
    """Drop the ``ecgvgg.status=interrupted`` tag of a run that is being resumed."""
    client = mlflow.tracking.MlflowClient()
    if client.get_run(run_id).data.tags.get("ecgvgg.status"):
        client.delete_tag(run_id, "ecgvgg.status")


def stale_runs(uri: str) -> list[Any]:
    """Runs that MLflow shows as RUNNING but whose process is gone (killed, crashed, machine restarted)."""
    client = mlflow.tracking.MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=5000)
    return [r for r in running if not is_live(uri, r.info.run_id)]


def mark_killed(uri: str, run_id: str) -> None:
    """End a stale run as KILLED, tagged ``ecgvgg.status=interrupted`` so that ``--resume`` can continue it."""
    client = mlflow.tracking.MlflowClient(uri)
    client.set_tag(run_id, "ecgvgg.status", "interrupted")
    client.set_terminated(run_id, status="KILLED")


@dataclass
class ResumePoint:
    """Where an interrupted run stopped: epochs completed, the best monitored value and its epoch, its checkpoint."""

    epoch: int
    best: float | None
    checkpoint: Path
    best_epoch: int | None = None


def resume_point(uri: str, run_id: str, params: Mapping[str, Any], monitor: str) -> ResumePoint:
    """Check that ``run_id`` can be resumed with this config and say where it stopped.

    Called with the run's lock held and before the run is reopened: a finished or live run, a
    changed config or a damaged checkpoint is refused with the run left as it is.
    """
    client = mlflow.tracking.MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ConfigError(f"--resume {run_id}: no such run in {uri}") from None
    if run.info.status == "FINISHED":
        raise ConfigError(f"--resume {run_id}: the run already finished")
    if run.data.tags.get("cv") == "true" or run.data.tags.get("sweep") == "true":
        raise ConfigError(f"--resume {run_id}: a cross-validation or sweep parent cannot be resumed")
    logged = run.data.params
    changed = [k for k, v in params.items()
               if k in logged and k not in RESUMABLE_CHANGES and logged[k] != _param_text(v)]
    if changed:
        raise ConfigError(f"--resume {run_id}: the config differs from the run's in {', '.join(changed)}")
    checkpoint = local_run_dir(uri, run_id) / "best.keras"
    if not checkpoint.is_file():
        raise ConfigError(f"--resume {run_id}: no checkpoint at {checkpoint} (the run ended before its first epoch)")
    try:
        load_checkpoint(checkpoint)
    except Exception as exc:  # noqa: BLE001 - Keras and h5py raise many kinds for a damaged file
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ConfigError(f"--resume {run_id}: the checkpoint {checkpoint} is damaged and cannot be loaded "
                          f"({type(exc).__name__}: {first[:200]})") from None
    history = client.get_metric_history(run_id, monitor)
    epoch = max((h.step for h in history), default=0)
    best_h = (min if monitor.endswith("loss") else max)(history, key=lambda h: h.value) if history else None
    return ResumePoint(epoch, best_h.value if best_h else None, checkpoint, best_h.step if best_h else None)


def _param_text(value: Any) -> str:
    """A param value as MLflow stores it."""
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def load_checkpoint(path: Path) -> Any:
    """Load a ``.keras`` checkpoint with its optimizer state."""
    import keras

    return keras.saving.load_model(path)

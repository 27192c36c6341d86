"""The MLflow store: experiments, run folders and locks, stale runs, resuming, run ids and a run's model.

Every function takes the store's URI; nothing here sets MLflow's process-wide tracking URI.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ecgvgg.core.contract import InputContract
from ecgvgg.core.errors import ConfigError, DataError
from ecgvgg.core.results import ResumePoint

log = logging.getLogger("ecgvgg")

for _noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent", "mlflow.models.model"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def experiment_id(uri: str, experiment: str) -> str:
    """The id of ``experiment`` in the store at ``uri``, creating both as needed.

    For a SQLite store the database folder is created and new experiments keep their artifacts
    in ``artifacts/`` beside the database, so one folder holds a whole study.
    """
    db = sqlite_path(uri)
    artifact_location = None
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (db.parent.resolve() / "artifacts").as_uri()
    # Several runs may start on a new store at once: creating its tables and the experiment is
    # serialised with a lock file beside the database.
    with _file_lock(db.with_suffix(".lock") if db is not None else None):
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        return client.create_experiment(experiment, artifact_location=artifact_location)


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (no-op without a path or without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None  # type: ignore[assignment]
    if path is None or fcntl is None:
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
            raise ConfigError(
                f"run {run_id} is still being trained by live process {pid}; "
                "wait for it, or stop it (Ctrl-C or kill) and resume it then"
            ) from None
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


def clear_interrupted(uri: str, run_id: str) -> None:
    """Drop the ``ecgvgg.status=interrupted`` tag of a run that is being resumed."""
    client = MlflowClient(uri)
    if client.get_run(run_id).data.tags.get("ecgvgg.status"):
        client.delete_tag(run_id, "ecgvgg.status")


def stale_runs(uri: str) -> list[Any]:
    """Runs that MLflow shows as RUNNING but whose process is gone (killed, crashed, machine restarted)."""
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=5000)
    return [r for r in running if not is_live(uri, r.info.run_id)]


def mark_killed(uri: str, run_id: str) -> None:
    """End a stale run as KILLED, tagged ``ecgvgg.status=interrupted`` so that ``--resume`` can continue it."""
    client = MlflowClient(uri)
    client.set_tag(run_id, "ecgvgg.status", "interrupted")
    client.set_terminated(run_id, status="KILLED")


def resume_point(uri: str, run_id: str, params: Mapping[str, Any], monitor: str) -> ResumePoint:
    """Check that ``run_id`` can be resumed with this config and say where it stopped.

    Called with the run's lock held and before the run is reopened: a finished or live run, a
    changed config or a damaged checkpoint is refused with the run left as it is.
    """
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--resume {run_id}: no such run in {uri}") from None
    if run.info.status == "FINISHED":
        raise ConfigError(f"--resume {run_id}: the run already finished")
    if run.data.tags.get("cv") == "true" or run.data.tags.get("sweep") == "true":
        raise ConfigError(f"--resume {run_id}: a cross-validation or sweep parent cannot be resumed")
    logged = run.data.params
    changed = [k for k, v in params.items() if k in logged and k not in RESUMABLE_CHANGES and logged[k] != param_text(v)]
    if changed:
        raise ConfigError(f"--resume {run_id}: the config differs from the run's in {', '.join(changed)}")
    checkpoint = local_run_dir(uri, run_id) / "best.keras"
    if not checkpoint.is_file():
        raise ConfigError(f"--resume {run_id}: no checkpoint at {checkpoint} (the run ended before its first epoch)")
    try:
        import keras

        keras.saving.load_model(checkpoint)
    except Exception as exc:  # noqa: BLE001 - Keras and h5py raise many kinds for a damaged file
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ConfigError(
            f"--resume {run_id}: the checkpoint {checkpoint} is damaged and cannot be loaded "
            f"({type(exc).__name__}: {first[:200]})"
        ) from None
    history = client.get_metric_history(run_id, monitor)
    epoch = max((h.step for h in history), default=0)
    best_h = (min if monitor.endswith("loss") else max)(history, key=lambda h: h.value) if history else None
    return ResumePoint(epoch, best_h.value if best_h else None, checkpoint, best_h.step if best_h else None)


def param_text(value: Any) -> str:
    """A param value as MLflow stores it."""
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


@contextmanager
def using(uri: str) -> Iterator[None]:
    """MLflow's tracking URI set to ``uri`` inside the block only, restored after (MLflow's own scoped setter).

    MLflow's fluent API (runs, logged models) reads the process-wide URI; this keeps it from leaking.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    env = os.environ.get("MLFLOW_TRACKING_URI")  # MLflow mirrors its URI there; the caller's value comes back
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def client(uri: str) -> MlflowClient:
    """An MLflow client of the store at ``uri``."""
    return MlflowClient(uri)


def run_exists(uri: str, run_id: str) -> bool:
    """Whether the store at ``uri`` has a run with this id."""
    try:
        MlflowClient(uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def resolve_run_id(uri: str, given: str, option: str = "--run") -> str:
    """The full id of the run that ``given`` (a full id or any unique prefix, as git takes) names.

    A SQLite store is looked up in its local run folders first; an ambiguous prefix is a
    ConfigError that names the candidates, an unknown id one that names the store.
    """
    given = given.strip()
    runs = _run_root(uri) if sqlite_path(uri) is not None else None
    found: set[str] = set()
    if runs is not None and runs.is_dir():
        found = {d.name for d in runs.iterdir() if d.is_dir() and d.name.startswith(given)}
    if given in found or len(given) == 32 and not found:
        return given
    if not found:
        c = MlflowClient(uri)
        ids = [e.experiment_id for e in c.search_experiments()]
        found = {r.info.run_id for r in c.search_runs(ids, max_results=50000) if r.info.run_id.startswith(given)}
    if len(found) > 1:
        raise ConfigError(
            f"{option} {given}: ambiguous, it starts {len(found)} run ids ({', '.join(sorted(found)[:4])}"
            f"{', ...' if len(found) > 4 else ''}); give more characters"
        )
    if not found:
        raise ConfigError(f"{option} {given}: no run with that id (or id prefix) in {uri}")
    return found.pop()


def run_model_path(uri: str, run_id: str) -> Path:
    """A local copy of the model that run ``run_id`` logged: its run folder's file, else downloaded."""
    from ecgvgg.core.inference import run_model_file

    local = run_model_file(uri, run_id)
    if local is not None:
        return local
    import mlflow.artifacts

    try:
        with using(uri):  # a logged model (models:/...) is found through the fluent API's store
            return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", tracking_uri=uri))
    except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for a missing run
        raise DataError(f"run {run_id}: no logged model in {uri} ({str(exc).splitlines()[0]})") from None


def run_contract(uri: str, run_id: str) -> InputContract:
    """The input contract of the model that run ``run_id`` logged."""
    from ecgvgg.core.inference import METADATA_FILE, model_file, read_contract

    path = run_model_path(uri, run_id)
    found = model_file(path) if path.is_dir() else path
    contract = read_contract(found) if found is not None else None
    if contract is None and path.is_dir() and (path / METADATA_FILE).is_file():
        contract = read_contract(path / METADATA_FILE)
    if contract is None:
        raise DataError(f"run {run_id}: its model has no ecgvgg input contract")
    return contract


def load_run_model(uri: str, run_id: str) -> Any:
    """The model that run ``run_id`` logged, with its contract (:class:`ecgvgg.core.inference.LoadedModel`)."""
    from ecgvgg.core.inference import load_model

    return load_model(run_model_path(uri, run_id), source=f"run {run_id}")

"""Load a trained model with its metadata and score or predict beats with it."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgvgg.errors import DataError
from ecgvgg.metrics import confusion, per_class_scores
from ecgvgg.shapes import reshape

METADATA_FILE = "ecgvgg.json"


@dataclass
class LoadedModel:
    """A Keras model and what is needed to feed it raw beats."""

    model: Any
    classes: list[int]
    class_names: list[str]
    input: dict[str, Any]
    length: int | None
    source: str
    data: dict[str, Any] = field(default_factory=dict)

    def prepare(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Check that the beats fit the model and reshape them for it.

        A DataFrame that has the training table's feature columns is read by those names (extra
        columns such as a label are ignored); any other table or array is read by position.
        """
        features = (self.data or {}).get("features")
        rhythm = (self.data or {}).get("rhythm_columns") or []
        if isinstance(X, pd.DataFrame) and features and set(features) <= set(map(str, X.columns)):
            X = X.rename(columns=str)[features]
        elif rhythm and isinstance(X, pd.DataFrame):
            missing = [c for c in rhythm if c not in set(map(str, X.columns))]
            if missing:
                raise DataError(f"the model {self.source} also reads rhythm column(s) {', '.join(missing)}, "
                                "which the table lacks (ecgvgg prepare writes them)")
        a = np.asarray(X, dtype=np.float32)
        if a.ndim != 2:
            raise DataError(f"expected beats as rows of samples, got an array of shape {a.shape}")
        if self.length is not None and a.shape[1] != self.length:
            raise DataError(
                f"the data has {a.shape[1]} samples per beat but the model {self.source} expects {self.length}"
            )
        return reshape(a, self.input["kind"], self.input.get("method", "fold"), self.input.get("size"))

    def predict_proba(self, X: pd.DataFrame | np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities, one column per class."""
        return np.asarray(self.model.predict(self.prepare(X), batch_size=batch_size, verbose=0))

    def predict_frame(self, X: pd.DataFrame | np.ndarray, batch_size: int = 1024) -> pd.DataFrame:
        """One row per beat: ``prediction`` (class label), ``class_name`` and ``p_<class name>``."""
        probs = self.predict_proba(X, batch_size)
        idx = np.argmax(probs, axis=1)
        frame = pd.DataFrame({"prediction": np.asarray(self.classes, dtype=np.int64)[idx],
                              "class_name": np.asarray(self.class_names, dtype=object)[idx]})
        for i, name in enumerate(self.class_names):
            frame[f"p_{name}"] = probs[:, i].astype(np.float64)
        return frame

    def score(self, X: pd.DataFrame | np.ndarray, y: pd.Series | np.ndarray) -> dict[str, Any]:
        """Per-class scores and the confusion matrix on labelled beats."""
        y = np.asarray(y)
        unknown = sorted(set(np.unique(y).tolist()) - set(self.classes))
        if unknown:
            raise DataError(f"labels {unknown} are not among the model's classes {self.classes} ({self.source})")
        pred = np.asarray(self.classes)[np.argmax(self.predict_proba(X), axis=1)]
        scores = per_class_scores(y, pred, self.classes)
        scores["confusion_matrix"] = confusion(y, pred, self.classes).tolist()
        return scores


def metadata(classes: Sequence[int], names: Sequence[str], input_cfg: dict[str, Any],
             length: int | None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The input contract of a saved model: its classes, how raw beats are reshaped for it, and
    how the table it was trained on was read (label and group columns, header)."""
    return {"classes": [int(c) for c in classes], "class_names": list(names), "input": dict(input_cfg),
            "length": length, "data": dict(data or {})}


def save_model(model: Any, path: str | Path, meta: dict[str, Any]) -> Path:
    """Save a Keras model with its input contract inside the ``.keras`` file (as ``ecgvgg.json``), atomically."""
    path = Path(path)
    partial = path.with_name(path.stem + ".partial.keras")
    model.save(partial)
    with zipfile.ZipFile(partial, "a") as archive:
        archive.writestr(METADATA_FILE, json.dumps(meta, indent=2))
    partial.replace(path)
    return path


def read_contract(path: str | Path) -> dict[str, Any] | None:
    """The input contract stored inside a ``.keras`` file, or None when it has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_FILE in archive.namelist():
                return json.loads(archive.read(METADATA_FILE))
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    return None


#: A run folder holds the final model beside checkpoints; these names are never the model to load.
_CHECKPOINTS = ("best.keras", "best.partial.keras", "model.partial.keras")


def _model_file(folder: Path) -> Path | None:
    """The final model in a run folder or a logged MLflow model folder (never a checkpoint)."""
    for candidate in (folder / "model.keras", folder / "data" / "model.keras"):
        if candidate.is_file():
            return candidate
    found = sorted(f for f in folder.rglob("*.keras") if f.name not in _CHECKPOINTS)
    return found[0] if found else None


def run_model_file(tracking_uri: str, run_id: str) -> Path | None:
    """The local copy of a run's final model (``runs/RUN_ID/model.keras`` beside a SQLite store), or None."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    path = Path(tracking_uri[len(prefix):]).parent / "runs" / run_id / "model.keras"
    return path if path.is_file() else None


def resolve_run_id(tracking_uri: str, given: str, option: str = "--run") -> str:
    """The full id of the run that ``given`` (a full id or any unique prefix, as git takes) names.

    A SQLite store is looked up in its local run folders first, without importing MLflow; an
    ambiguous prefix is a ConfigError that names the candidates, an unknown id one that names the store.
    """
    from ecgvgg.errors import ConfigError

    given = given.strip()
    sqlite = "sqlite:///"
    found: set[str] = set()
    if tracking_uri.startswith(sqlite):
        runs = Path(tracking_uri[len(sqlite):]).parent / "runs"
        if runs.is_dir():
            found = {d.name for d in runs.iterdir() if d.is_dir() and d.name.startswith(given)}
    if given in found or len(given) == 32 and not found:
        return given
    if not found:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        found = {r.info.run_id for r in client.search_runs(ids, max_results=50000) if r.info.run_id.startswith(given)}
    if len(found) > 1:
        raise ConfigError(f"{option} {given}: ambiguous, it starts {len(found)} run ids ({', '.join(sorted(found)[:4])}"
                          f"{', ...' if len(found) > 4 else ''}); give more characters")
    if not found:
        raise ConfigError(f"{option} {given}: no run with that id (or id prefix) in {tracking_uri}")
    return found.pop()


def run_contract(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """The input contract of the model that run ``run_id`` logged (read locally when the store is a SQLite file)."""
    local = run_model_file(tracking_uri, run_id)
    contract = read_contract(local) if local is not None else None
    if contract is not None:
        return contract
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    try:
        folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model"))
    except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing run
        raise DataError(f"run {run_id}: no logged model in {tracking_uri}") from None
    found = _model_file(folder)
    contract = read_contract(found) if found is not None else None
    if contract is None and (folder / METADATA_FILE).is_file():
        contract = json.loads((folder / METADATA_FILE).read_text())
    if contract is None:
        raise DataError(f"run {run_id}: its model has no ecgvgg input contract")
    return contract


def load_model(path: str | Path | None = None, *, run_id: str | None = None) -> LoadedModel:
    """Load a ``.keras`` model saved by ecgvgg, or a logged run's model, with its input contract.

    A file without a contract (inside it, or ``ecgvgg.json`` beside it) is refused: guessing
    how its beats were shaped, or whether a last column is a label, gives silent nonsense.
    """
    import keras

    if run_id is not None:
        import mlflow

        try:
            path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model"))
        except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for a missing run
            raise DataError(f"run {run_id}: no logged model in {mlflow.get_tracking_uri()} "
                            f"({str(exc).splitlines()[0]})") from None
    path = Path(path)
    folder = path if path.is_dir() else None
    if folder is not None:
        found = _model_file(folder)
        if found is None:
            raise DataError(f"{f'run {run_id}' if run_id else path}: no .keras model in this folder")
        path = found
    if not path.is_file():
        raise DataError(f"{path}: no such model file")
    source = f"of run {run_id}" if run_id else str(path)
    meta = read_contract(path)
    if meta is None:
        for beside in ([folder / METADATA_FILE] if folder is not None else []) + [path.parent / METADATA_FILE]:
            if beside.is_file():
                meta = json.loads(beside.read_text())
                break
    if meta is None:
        raise DataError(f"{path}: no ecgvgg input contract in or beside this model (classes, beat length, "
                        "reshaping); use a model saved by ecgvgg")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a damaged file
        raise DataError(f"{path}: cannot load as a Keras model ({str(exc).splitlines()[0]})") from None
    return LoadedModel(model, meta["classes"], meta["class_names"], meta["input"], meta["length"], source,
                       meta.get("data", {}))

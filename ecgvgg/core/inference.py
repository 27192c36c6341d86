"""Load a trained model with its metadata and score or predict beats with it."""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgvgg.core.contract import InputContract
from ecgvgg.core.errors import DataError
from ecgvgg.core.metrics import confusion, per_class_scores

METADATA_FILE = "ecgvgg.json"
#: The fitted baseline of a blended model (``baseline_blend``), pickled inside the ``.keras`` file.
BASELINE_FILE = "ecgvgg_baseline.pkl"


@dataclass
class LoadedModel:
    """A Keras model and its input contract: what is needed to feed it raw beats."""

    model: Any
    contract: InputContract
    source: str
    #: The baseline that the network's probabilities are blended with (``contract.blend``), or None.
    baseline: Any = None

    @property
    def classes(self) -> list[int]:
        """The class labels, in the order of the model's outputs."""
        return self.contract.classes

    @property
    def class_names(self) -> list[str]:
        """The class names, in the order of the model's outputs."""
        return self.contract.class_names

    @property
    def length(self) -> int | None:
        """Values per row that the model reads (beat samples and rhythm columns)."""
        return self.contract.length

    @property
    def data(self) -> dict[str, Any]:
        """How the training table was read (label, group and feature columns, header, groups seen)."""
        return self.contract.data

    def rows(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Check that the beats fit the model and return them as float32 rows in the model's column order.

        A DataFrame that has the training table's feature columns is read by those names (extra
        columns such as a label are ignored); any other table or array is read by position.
        """
        features, rhythm = self.contract.features, self.contract.rhythm_columns
        if isinstance(X, pd.DataFrame) and features and set(features) <= set(map(str, X.columns)):
            X = X.rename(columns=str)[features]
        elif self.contract.channels and isinstance(X, pd.DataFrame):
            from ecgvgg.core.data import channel_columns

            channel_columns(list(map(str, X.columns)), self.contract.channels, f"the table for the model from {self.source}")
        elif rhythm and isinstance(X, pd.DataFrame):
            missing = [c for c in rhythm if c not in set(map(str, X.columns))]
            if missing:
                raise DataError(
                    f"the model from {self.source} also reads rhythm column(s) {', '.join(missing)}, "
                    "which the table lacks (ecgvgg prepare writes them)"
                )
        a = np.asarray(X, dtype=np.float32)
        if a.ndim != 2:
            raise DataError(f"expected beats as rows of samples, got an array of shape {a.shape}")
        if self.length is not None and a.shape[1] != self.length:
            raise DataError(f"the data has {a.shape[1]} samples per beat but the model from {self.source} expects {self.length}")
        return a

    def prepare(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Check that the beats fit the model (see :meth:`rows`), warn when they look unlike its training
        beats (:meth:`InputContract.drift`), and reshape them for it."""
        return self._shaped(self.rows(X))

    def _shaped(self, rows: np.ndarray) -> np.ndarray:
        """Checked rows (:meth:`rows`) with the drift warning, reshaped for the network."""
        import warnings

        why = self.contract.drift(rows)
        if why:
            warnings.warn(f"model from {self.source}: {why}", stacklevel=3)
        return self.contract.shape(rows)

    def predict_proba(self, X: pd.DataFrame | np.ndarray, batch_size: int = 1024, groups: Any = None) -> np.ndarray:
        """Class probabilities, one column per class (blended with the saved baseline's when there is one; with
        the record of each row, ``groups``, after the model's record adaptation and consensus when it has them)."""
        rows = self.rows(X)
        probs = self.contract.network_probabilities(self.model, self._shaped(rows), groups, batch_size)
        if self.baseline is not None:
            from ecgvgg.core.baselines import blended

            probs = blended(probs, self.baseline, rows, self.classes, self.contract.blend)
        return self.contract.with_consensus(probs, rows, groups)

    def predict_frame(self, X: pd.DataFrame | np.ndarray, batch_size: int = 1024, groups: Any = None) -> pd.DataFrame:
        """One row per beat: ``prediction`` (class label), ``class_name`` and ``p_<class name>``."""
        probs = self.predict_proba(X, batch_size, groups)
        idx = np.argmax(probs, axis=1)
        frame = pd.DataFrame(
            {
                "prediction": np.asarray(self.classes, dtype=np.int64)[idx],
                "class_name": np.asarray(self.class_names, dtype=object)[idx],
            }
        )
        for i, name in enumerate(self.class_names):
            frame[f"p_{name}"] = probs[:, i].astype(np.float64)
        return frame

    def score(self, X: pd.DataFrame | np.ndarray, y: pd.Series | np.ndarray, groups: Any = None) -> dict[str, Any]:
        """Per-class scores and the confusion matrix on labelled beats."""
        y = np.asarray(y)
        unknown = sorted(set(np.unique(y).tolist()) - set(self.classes))
        if unknown:
            raise DataError(f"labels {unknown} are not among the model's classes {self.classes} ({self.source})")
        pred = np.asarray(self.classes)[np.argmax(self.predict_proba(X, groups=groups), axis=1)]
        scores = per_class_scores(y, pred, self.classes)
        scores["confusion_matrix"] = confusion(y, pred, self.classes).tolist()
        return scores


def save_model(model: Any, path: str | Path, contract: InputContract, baseline: Any = None) -> Path:
    """Save a Keras model with its input contract (``ecgvgg.json``) and, for a blended contract, its fitted
    baseline (``ecgvgg_baseline.pkl``) inside the ``.keras`` file, atomically."""
    from ecgvgg.core.files import atomic

    if bool(contract.blend) != (baseline is not None):
        raise ValueError("a blended model is saved with its baseline, and only a blended one")
    with atomic(path) as partial:
        model.save(partial)
        with zipfile.ZipFile(partial, "a") as archive:
            archive.writestr(METADATA_FILE, json.dumps(contract.to_dict(), indent=2))
            if baseline is not None:
                archive.writestr(BASELINE_FILE, pickle.dumps(baseline))
    return Path(path)


def _read_baseline(path: Path, contract: InputContract) -> Any:
    """The pickled baseline inside a blended model's ``.keras`` file (None for a network alone)."""
    if not contract.blend:
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            return pickle.loads(archive.read(BASELINE_FILE))  # noqa: S301 - a file ecgvgg saved; load models you trust
    except (KeyError, zipfile.BadZipFile, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        raise DataError(f"{path}: blends a baseline into its network but holds no readable baseline ({exc})") from None


def read_contract(path: str | Path) -> InputContract | None:
    """The input contract stored inside a ``.keras`` file (or ``ecgvgg.json`` itself), or None when it has none."""
    try:
        if Path(path).name == METADATA_FILE:
            return InputContract.from_dict(json.loads(Path(path).read_text()))
        with zipfile.ZipFile(path) as archive:
            if METADATA_FILE in archive.namelist():
                return InputContract.from_dict(json.loads(archive.read(METADATA_FILE)))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError):
        return None
    return None


#: A run folder holds the final model beside checkpoints; these names are never the model to load.
_CHECKPOINTS = ("best.keras", "best.partial.keras", "model.partial.keras")


def model_file(folder: Path) -> Path | None:
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
    path = Path(tracking_uri[len(prefix) :]).parent / "runs" / run_id / "model.keras"
    return path if path.is_file() else None


def load_model(path: str | Path, *, source: str | None = None) -> LoadedModel:
    """Load a ``.keras`` model saved by ecgvgg (a file, a run folder or a logged model folder) with its contract.

    A file without a contract (inside it, or ``ecgvgg.json`` beside it) is refused: guessing
    how its beats were shaped, or whether a last column is a label, gives silent nonsense.
    ``source`` names the model in messages (default: its path).
    """
    import keras

    path = Path(path)
    folder = path if path.is_dir() else None
    if folder is not None:
        found = model_file(folder)
        if found is None:
            raise DataError(f"{source or path}: no .keras model in this folder")
        path = found
    if not path.is_file():
        raise DataError(f"{path}: no such model file")
    source = source or str(path)
    contract = read_contract(path)
    for beside in ([folder / METADATA_FILE] if folder is not None else []) + [path.parent / METADATA_FILE]:
        if contract is None and beside.is_file():
            contract = read_contract(beside)
    if contract is None:
        raise DataError(
            f"{path}: no ecgvgg input contract in or beside this model (classes, beat length, "
            "reshaping); use a model saved by ecgvgg"
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a damaged file
        raise DataError(f"{path}: cannot load as a Keras model ({str(exc).splitlines()[0]})") from None
    return LoadedModel(model, contract, source, _read_baseline(path, contract))


def table_settings(
    loaded: LoadedModel, data: Path, label_column: str | None = None, group_column: str | None = None
) -> tuple[str, str | None, bool | None]:
    """Label column, group column and header for reading ``data``: those given, else the model's training table's."""
    trained = loaded.data or {}
    label = label_column or trained.get("label_column") or "label"
    group = group_column
    if group is None and trained.get("group_column"):
        from ecgvgg.core.data import has_column

        group = trained["group_column"] if has_column(data, trained["group_column"]) else None
    header = trained.get("header")
    return label, group, header if isinstance(header, bool) else None


def read_beats(
    loaded: LoadedModel, data: Path, label_column: str | None = None, group_column: str | None = None, *, labelled: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None, str | None]:
    """The beats of ``data`` read as the model's training table was (see :func:`table_settings`):
    ``(X, others, y, group column)``, ``y`` only when ``labelled`` (see :func:`ecgvgg.core.data.load_beats`)."""
    from ecgvgg.core.data import load_beats

    label, group, header = table_settings(loaded, data, label_column, group_column)
    X, others, y = load_beats(
        data,
        length=loaded.length,
        label_column=label,
        group_column=group,
        header=header,
        features=loaded.contract.features or None,
        classes=loaded.classes if labelled else None,
    )
    return X, others, y, group


def warn_seen_groups(loaded: LoadedModel, data: Path, groups: Any, scored: bool = True) -> None:
    """Warn when the table holds groups (records, segments) that the model was trained or validated on
    (``scored``: the command scores the predictions)."""
    import warnings

    seen = set((loaded.data or {}).get("train_groups") or ())
    if groups is None or not seen:
        return
    mine = {str(g) for g in groups}
    overlap = sorted(mine & seen)
    if overlap:
        warnings.warn(
            f"{data}: {len(overlap)} of its {len(mine)} {loaded.data.get('group_column') or 'group'} "
            f"values ({', '.join(overlap[:5])}{', ...' if len(overlap) > 5 else ''}) were in the model's "
            "training or validation split: "
            + ("its scores on them are optimistic" if scored else "it will do better on them than on new recordings"),
            stacklevel=2,
        )

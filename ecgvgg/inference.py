"""Load a trained model with its metadata and score or predict beats with it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
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

    def prepare(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Check that the beats fit the model and reshape them for it."""
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
             length: int | None) -> dict[str, Any]:
    """What a saved model needs beside its weights to read raw beats."""
    return {"classes": [int(c) for c in classes], "class_names": list(names), "input": dict(input_cfg),
            "length": length}


def load_model(path: str | Path | None = None, *, run_id: str | None = None) -> LoadedModel:
    """Load a ``.keras`` file (with ``ecgvgg.json`` beside it when present) or a logged run's model."""
    import keras

    if run_id is not None:
        import mlflow

        try:
            path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model"))
        except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for a missing run
            raise DataError(f"run {run_id}: no logged model ({exc})") from None
    path = Path(path)
    if path.is_dir():  # a logged model or a run folder: the .keras file inside, ecgvgg.json beside it
        files = sorted(path.rglob("*.keras"))
        if not files:
            raise DataError(f"{f'run {run_id}' if run_id else path}: no .keras model in this folder")
        meta_path, path = path / METADATA_FILE, files[0]
    else:
        meta_path = path.parent / METADATA_FILE
    if not path.is_file():
        raise DataError(f"{path}: no such model file")
    source = f"of run {run_id}" if run_id else str(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a damaged file
        raise DataError(f"{path}: cannot load as a Keras model ({exc})") from None
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else _infer_metadata(model)
    return LoadedModel(model, meta["classes"], meta["class_names"], meta["input"], meta["length"], source)


def _infer_metadata(model: Any) -> dict[str, Any]:
    """Metadata for a bare ``.keras`` file: 1D when the input is (length, 1), else a folded image."""
    shape = tuple(model.input_shape[1:])
    n = int(model.output_shape[-1])
    if len(shape) == 2:
        return metadata(range(n), [str(c) for c in range(n)], {"kind": "1d"}, shape[0])
    side = int(shape[0])
    return metadata(range(n), [str(c) for c in range(n)], {"kind": "2d", "method": "fold", "size": side}, None)

"""The model a run logs to MLflow: a pyfunc that takes raw beats as a table.

``mlflow.pyfunc.load_model(...).predict(frame)`` and ``mlflow models serve`` take one row per
beat (the training table's feature columns, e.g. ``x0..x186``), reshape them as in training (1D,
folded or GAF image) and answer ``prediction``, ``class_name`` and ``p_<class>`` per beat. The
``.keras`` file with its input contract travels inside the logged model (``artifacts/``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

for _noisy in ("mlflow.pyfunc", "mlflow.models.model", "mlflow.models.signature"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

#: Installed versions of these are pinned in the logged model's requirements.
PINNED = ("tensorflow", "keras", "mlflow", "numpy", "pandas", "pyarrow", "scikit-learn", "imbalanced-learn", "pydantic", "pyyaml")


class BeatClassifier(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """Raw beats in, class names and probabilities out."""

    def load_context(self, context: Any) -> None:
        """Load the Keras model and its input contract from the logged artifacts."""
        from ecgvgg.core.inference import load_model

        self.loaded = load_model(context.artifacts["keras_model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """``prediction``, ``class_name`` and ``p_<class>`` for each row of beats."""
        return self.loaded.predict_frame(model_input)


def pinned_requirements() -> list[str]:
    """``package==version`` for the installed packages the model needs."""
    out = []
    for name in PINNED:
        try:
            out.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def log_beat_model(model_path: Path, example: pd.DataFrame, contract: Any) -> str:
    """Log the ``.keras`` file as a pyfunc model named ``model`` with a column signature; return its URI."""
    from mlflow.models import infer_signature

    from ecgvgg.core.inference import load_model

    loaded = load_model(model_path)
    package = Path(__file__).resolve().parents[1]  # the whole ecgvgg package
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():  # the code alone, without the sample data
        warnings.simplefilter("ignore")  # MLflow's hints on integer columns and on pickled models
        signature = infer_signature(example, loaded.predict_frame(example))
        code = Path(tmp) / "ecgvgg"
        shutil.copytree(package, code, ignore=shutil.ignore_patterns("sample_data", "__pycache__", "*.keras"))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=BeatClassifier(),
            artifacts={"keras_model": str(model_path)},
            signature=signature,
            input_example=example,
            pip_requirements=pinned_requirements(),
            metadata=contract.to_dict(),
            code_paths=[str(code)],
        )
    return info.model_uri

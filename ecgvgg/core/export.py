"""Export a trained model for use outside Python and MLflow: ONNX, a TensorFlow SavedModel or LiteRT.

Built on ``keras.Model.export`` (ONNX through tf2onnx >= 1.17). The batch dimension stays
dynamic. The input contract (classes, beat length, reshaping, columns, rhythm inputs) is
written beside the model as JSON. Every export is read back with its own runtime
(onnxruntime, ``tf.saved_model.load(...).serve``, ``ai_edge_litert``) and run on check rows;
it is refused, and nothing is left behind, when its probabilities differ from Keras' by more
than :data:`TOLERANCE`. Augmentation lives in the training input pipeline, not in the model,
so no training-only layer reaches the exported graph. Install the runtimes with
``pip install -e ".[export]"``.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgvgg.core.errors import ConfigError, DataError

#: Our format names, Keras' names for them, and the file suffix each takes ("" for a folder).
FORMATS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", ".onnx"),
    "savedmodel": ("tf_saved_model", ""),
    "litert": ("litert", ".tflite"),
}
#: Largest absolute difference in any class probability, exported against Keras, that is accepted.
TOLERANCE = 1e-4
#: The first Keras whose ``Model.export`` writes all three formats (LiteRT came last).
KERAS_EXPORT = (3, 13)
#: Python packages each format's export and check need.
NEEDS = {"onnx": ("tf2onnx", "onnxruntime"), "savedmodel": (), "litert": ("ai_edge_litert",)}


class ExportMismatch(RuntimeError):
    """The exported model's answers differ from the Keras model's by more than the tolerance."""


@dataclass
class Exported:
    """A checked export: where it is, its contract file and how far its answers are from Keras'."""

    path: Path
    contract_path: Path
    max_abs_diff: float
    rows: int


def check_request(fmt: str, out: Path) -> None:
    """Refuse an unknown format, a missing runtime or an output path of the wrong kind, before TensorFlow loads."""
    import importlib.util

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    from importlib.metadata import version

    keras = version("keras")
    if tuple(int(p) for p in keras.split(".")[:2] if p.isdigit()) < KERAS_EXPORT:
        raise ConfigError(
            f"--format {fmt} needs Keras >= {'.'.join(map(str, KERAS_EXPORT))} (Model.export to ONNX "
            f'and LiteRT), not {keras}: pip install -e ".[export]"'
        )
    missing = [name for name in NEEDS[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f'--format {fmt} needs {", ".join(missing)}: pip install -e ".[export]"')
    suffix = FORMATS[fmt][1]
    if suffix and out.suffix.lower() != suffix:
        raise ConfigError(f"-o {out}: a {fmt} export is one file ending in {suffix}")
    if not suffix and out.suffix.lower() in {s for _, s in FORMATS.values() if s}:
        raise ConfigError(f"-o {out}: a savedmodel export is a folder; give a folder name")
    if out.exists():
        raise ConfigError(f"-o {out}: already exists; remove it or choose another name")
    if contract_path(out).exists():
        raise ConfigError(f"-o {out}: its contract file {contract_path(out)} already exists")


def check_exportable(contract: Any, fmt: str) -> None:
    """Refuse a model blended with its baseline (``baseline_blend``) or adapted to each record (``record_adaptation``):
    the exported file would hold the network alone, answering beat by beat as trained."""
    if contract.blend:
        raise DataError(
            f"the model blends its network with a baseline (baseline_blend {contract.blend:g}), which {fmt} "
            "cannot hold; export a model trained with baseline_blend: 0"
        )
    if contract.adaptation:
        raise DataError(
            f"the model adapts its batch normalisation to each record (record_adaptation "
            f"{contract.adaptation['weight']:g}), which {fmt} cannot hold; export a model trained with record_adaptation: 0"
        )


def contract_path(out: Path) -> Path:
    """Where the input contract of an export at ``out`` is written: beside it, as ``NAME.json``."""
    return out.with_suffix(".json") if out.suffix else out.with_name(out.name + ".json")


def export_model(model: Any, contract: Any, shaped: np.ndarray, fmt: str, out: Path, tolerance: float = TOLERANCE) -> Exported:
    """Export ``model`` as ``fmt`` to ``out``, check it on ``shaped`` (rows reshaped for the model), write the contract.

    Raises :class:`ExportMismatch` (and removes what it wrote) when the answers differ by more
    than ``tolerance``. A model blended with its baseline (``baseline_blend``) is refused: the
    exported file would hold the network alone and answer otherwise.
    """
    check_exportable(contract, fmt)
    shaped = np.asarray(shaped, dtype=np.float32)
    expected = np.asarray(model(shaped, training=False), dtype=np.float32)  # also marks the model as called
    partial = out.with_name(f".partial-{out.name}")  # Keras checks the suffix
    _remove(partial)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet("tf2onnx", "tensorflow"), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # tf2onnx probes NumPy 2 for np.object
            model.export(str(partial), format=FORMATS[fmt][0], verbose=False)
        got = RUNNERS[fmt](partial)(shaped)
        diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
        if not diff <= tolerance:
            raise ExportMismatch(
                f"the {fmt} export's probabilities differ from the Keras model's by {diff:.3g} "
                f"(more than {tolerance:g}) on {len(shaped)} rows; nothing was written"
            )
        partial.rename(out)
    finally:
        _remove(partial)
    described = {
        **contract.to_dict(),
        "export": {
            "format": fmt,
            "input_shape": [None, *shaped.shape[1:]],
            "output": "class probabilities, in class_names order",
            "checked_rows": len(shaped),
            "max_abs_diff_from_keras": diff,
        },
    }
    contract_path(out).write_text(json.dumps(described, indent=2))
    return Exported(out, contract_path(out), diff, len(shaped))


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Hold these loggers at WARNING: the converters report every optimisation pass at INFO."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _remove(path: Path) -> None:
    """Remove a file or folder if it is there."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Class probabilities from an ONNX file, through onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: x})[0], dtype=np.float32)


def savedmodel_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Class probabilities from a SavedModel folder, through its ``serve`` endpoint."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return lambda x: np.asarray(loaded.serve(tf.constant(x)), dtype=np.float32)


def litert_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Class probabilities from a LiteRT (``.tflite``) file, through ``ai_edge_litert``'s interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))

    def run(x: np.ndarray) -> np.ndarray:
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, list(x.shape))  # the batch dimension is dynamic
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), dtype=np.float32)

    return run


RUNNERS: dict[str, Callable[[Path], Callable[[np.ndarray], np.ndarray]]] = {
    "onnx": onnx_runner,
    "savedmodel": savedmodel_runner,
    "litert": litert_runner,
}


def check_rows(contract: Any, n: int = 256, seed: int = 0) -> tuple[np.ndarray, str]:
    """Rows to check an export on: ``n`` of the bundled sample beats when they fit the model, else seeded random rows."""
    import pandas as pd

    from ecgvgg import sample_path

    sample = pd.read_parquet(sample_path()).rename(columns=str)
    beats = sample.drop(columns=[c for c in ("label", "segment") if c in sample.columns])
    features = contract.features
    if features and set(features) <= set(sample.columns):
        return np.asarray(sample[features].iloc[:n], dtype=np.float32), f"{min(n, len(sample))} bundled sample beats"
    if not contract.rhythm_columns and contract.length == beats.shape[1]:
        return np.asarray(beats.iloc[:n], dtype=np.float32), f"{min(n, len(sample))} bundled sample beats"
    length = contract.length or len(features)
    rows = np.random.default_rng(seed).random((n, length), dtype=np.float32)
    return rows, f"{n} random rows (the bundled beats do not fit this model's {length} columns)"

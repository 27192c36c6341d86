"""ecgvgg: leak-safe VGG16-style heartbeat classifiers.

The names in ``__all__`` are the stable public API; they are imported on first use, so ``import
ecgvgg`` stays light, and the preprocessing never imports TensorFlow, so other studies can use it
with their own models. Everything else may move between releases.
"""

from __future__ import annotations

from importlib import import_module, resources
from pathlib import Path
from typing import Any

__version__ = "0.2.0"

#: Each public name and the module that defines it.
_PUBLIC = {
    # loading and validating beat tables
    "load_xy": "ecgvgg.data", "load_beats": "ecgvgg.data", "class_counts": "ecgvgg.data",
    # split first, then oversample the training part only
    "split_then_oversample": "ecgvgg.folds", "split_indices": "ecgvgg.folds", "cv_folds": "ecgvgg.folds",
    "oversample_fold": "ecgvgg.folds", "oversample": "ecgvgg.resampling", "make_sampler": "ecgvgg.resampling",
    "Splits": "ecgvgg.resampling",
    # reshaping beats for the networks
    "to_1d": "ecgvgg.shapes", "to_2d": "ecgvgg.shapes", "reshape": "ecgvgg.shapes",
    # WFDB records to beats: prepare's functions, rhythm and the patient's reference beat
    "prepare_records": "ecgvgg.records", "beats_from_signal": "ecgvgg.records", "cut_beats": "ecgvgg.records",
    "rhythm_features": "ecgvgg.records", "reference_beats": "ecgvgg.records", "pick_leads": "ecgvgg.records",
    "DS1": "ecgvgg.records", "DS2": "ecgvgg.records",
    # scores and verdicts
    "aami_scores": "ecgvgg.metrics", "jk_index": "ecgvgg.metrics", "bootstrap_macro_f1": "ecgvgg.metrics",
    "held_out_verdict": "ecgvgg.metrics",
    # the network and the study
    "vgg16": "ecgvgg.models", "load_config": "ecgvgg.config", "prepare_study": "ecgvgg.dataset",
    "run_study": "ecgvgg.study", "run_fold": "ecgvgg.study", "load_model": "ecgvgg.inference",
}
#: Public names whose function has another name in its module.
_RENAMED = {"prepare_study": "prepare"}

__all__ = ["__version__", "sample_path", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ecgvgg' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


def sample_path(name: str = "mitbih_beats_imbalanced.parquet") -> Path:
    """Return the path of a real MIT-BIH sample bundled with the package."""
    path = Path(str(resources.files("ecgvgg") / "sample_data" / name))
    if not path.is_file():
        from ecgvgg.errors import DataError

        raise DataError(f"{name}: no such bundled sample (have: mitbih_beats_imbalanced.parquet)")
    return path

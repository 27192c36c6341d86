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
    "load_xy": "ecgvgg.core.data",
    "load_beats": "ecgvgg.core.data",
    "class_counts": "ecgvgg.core.data",
    # split first, then oversample the training part only
    "split_then_oversample": "ecgvgg.core.folds",
    "split_indices": "ecgvgg.core.folds",
    "cv_folds": "ecgvgg.core.folds",
    "oversample_fold": "ecgvgg.core.folds",
    "oversample": "ecgvgg.core.resampling",
    "make_sampler": "ecgvgg.core.resampling",
    "Splits": "ecgvgg.core.resampling",
    # reshaping beats for the networks
    "to_1d": "ecgvgg.core.shapes",
    "to_2d": "ecgvgg.core.shapes",
    "reshape": "ecgvgg.core.shapes",
    # WFDB records to beats: prepare's functions, rhythm and the patient's reference beat
    "prepare_records": "ecgvgg.core.records",
    "beats_from_signal": "ecgvgg.core.records",
    "cut_beats": "ecgvgg.core.records",
    "rhythm_features": "ecgvgg.core.records",
    "reference_beats": "ecgvgg.core.records",
    "pick_leads": "ecgvgg.core.records",
    "DS1": "ecgvgg.core.records",
    "DS2": "ecgvgg.core.records",
    # scores and verdicts
    "aami_scores": "ecgvgg.core.metrics",
    "jk_index": "ecgvgg.core.metrics",
    "bootstrap_macro_f1": "ecgvgg.core.metrics",
    "held_out_verdict": "ecgvgg.core.metrics",
    # the network and the study
    "vgg16": "ecgvgg.core.models",
    "load_config": "ecgvgg.core.config",
    "prepare_study": "ecgvgg.core.dataset",
    "run_study": "ecgvgg.core.study",
    "run_fold": "ecgvgg.core.study",
    "load_model": "ecgvgg.core.inference",
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
        from ecgvgg.core.errors import DataError

        raise DataError(f"{name}: no such bundled sample (have: mitbih_beats_imbalanced.parquet)")
    return path

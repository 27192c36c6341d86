"""ecgvgg: leak-safe VGG16-style heartbeat classifiers.

The preprocessing modules (:mod:`ecgvgg.data`, :mod:`ecgvgg.resampling`,
:mod:`ecgvgg.shapes`, :mod:`ecgvgg.metrics`) never import TensorFlow, so other
studies can use them with their own models.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__version__ = "0.1.0"


def sample_path(name: str = "mitbih_beats_imbalanced.parquet") -> Path:
    """Return the path of a real MIT-BIH sample bundled with the package."""
    path = Path(str(resources.files("ecgvgg") / "sample_data" / name))
    if not path.is_file():
        from ecgvgg.errors import DataError

        raise DataError(f"{name}: no such bundled sample (have: mitbih_beats_imbalanced.parquet)")
    return path

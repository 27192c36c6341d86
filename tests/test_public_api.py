"""The stable public API: every name in ``ecgvgg.__all__`` is there, documented, and none disappears."""

from __future__ import annotations

import subprocess
import sys

import ecgvgg
from conftest import ROOT

#: The public API. A name may be added here; removing one breaks the studies that import it.
PUBLIC = {
    "__version__",
    "sample_path",
    "load_xy",
    "load_beats",
    "class_counts",
    "split_then_oversample",
    "split_indices",
    "cv_folds",
    "oversample_fold",
    "oversample",
    "make_sampler",
    "Splits",
    "to_1d",
    "to_2d",
    "reshape",
    "prepare_records",
    "beats_from_signal",
    "cut_beats",
    "rhythm_features",
    "reference_beats",
    "pick_leads",
    "DS1",
    "DS2",
    "aami_scores",
    "jk_index",
    "bootstrap_macro_f1",
    "held_out_verdict",
    "vgg16",
    "load_config",
    "prepare_study",
    "run_study",
    "run_fold",
    "load_model",
}


def test_every_public_name_imports_and_is_documented():
    assert PUBLIC <= set(ecgvgg.__all__), sorted(PUBLIC - set(ecgvgg.__all__))
    api = (ROOT / "docs" / "api.md").read_text()
    for name in ecgvgg.__all__:
        value = getattr(ecgvgg, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), name
        if name not in ("__version__",):
            assert f"ecgvgg.{name}" in api, f"{name} is not on the API page"


def test_importing_the_preprocessing_loads_no_tensorflow_or_mlflow():
    code = (
        "import sys, ecgvgg; ecgvgg.load_xy, ecgvgg.split_then_oversample, ecgvgg.to_1d, ecgvgg.prepare_records; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"

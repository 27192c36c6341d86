"""Reshaping beats for 1D and 2D networks, and keeping the preprocessing free of TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ecgvgg.core.shapes import input_shape, to_1d, to_2d


def test_to_1d_is_a_float32_view(sample_xyg):
    X = sample_xyg[0].to_numpy()
    out = to_1d(X)
    assert out.shape == (len(X), 187, 1) and out.dtype == np.float32
    assert np.shares_memory(out, X)


def test_fold_pads_and_folds_row_by_row(sample_xyg):
    X = sample_xyg[0].to_numpy()[:4]
    img = to_2d(X)
    assert img.shape == (4, 14, 14, 1) and img.dtype == np.float32
    flat = img.reshape(4, -1)
    np.testing.assert_array_equal(flat[:, :187], X)
    assert not flat[:, 187:].any()
    assert input_shape(187, "2d") == (14, 14, 1)


def test_gramian_angular_field_is_symmetric_and_bounded(sample_xyg):
    X = sample_xyg[0].to_numpy()[:3]
    g = to_2d(X, method="gaf", size=32)
    assert g.shape == (3, 32, 32, 1) and g.dtype == np.float32
    np.testing.assert_allclose(g, np.swapaxes(g, 1, 2), atol=1e-6)
    assert g.min() >= -1 - 1e-6 and g.max() <= 1 + 1e-6
    # the diagonal is cos(2 phi) = 2 x^2 - 1 of the rescaled beat
    diag = np.diagonal(g[0, :, :, 0])
    assert np.all(diag >= -1 - 1e-6)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="2-D"):
        to_1d(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="unknown 2-D method"):
        to_2d(np.zeros((2, 9)), method="spiral")


def test_preprocessing_imports_without_tensorflow():
    code = (
        "import sys, ecgvgg.core.data, ecgvgg.core.resampling, ecgvgg.core.shapes, ecgvgg.core.metrics, ecgvgg.core.config;"
        "bad = [m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_functions_have_docstrings_and_type_hints():
    import ast
    from pathlib import Path

    missing = []
    for path in sorted((Path(__file__).parents[1] / "ecgvgg").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                hinted = node.returns is not None and all(a.annotation is not None for a in node.args.args)
                if not ast.get_docstring(node) or not hinted:
                    missing.append(f"{path.stem}.{node.name}")
    assert not missing

"""Reshape beats (rows of samples) for 1D and 2D networks; float32 throughout, no TensorFlow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

TWO_D_METHODS: tuple[str, ...] = ("fold", "gaf")


def to_1d(X: np.ndarray | pd.DataFrame) -> np.ndarray:
    """Return beats as ``(n, length, 1)`` float32 (a view when ``X`` already is contiguous float32)."""
    a = np.asarray(X, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected beats as a 2-D array (n, length), got shape {a.shape}")
    return a.reshape(a.shape[0], a.shape[1], 1)


def fold_side(length: int) -> int:
    """Side of the smallest square that holds ``length`` samples."""
    return math.isqrt(length - 1) + 1 if length > 0 else 0


def to_2d(X: np.ndarray | pd.DataFrame, method: str = "fold", size: int | None = None) -> np.ndarray:
    """Return beats as images ``(n, h, w, 1)`` float32.

    ``fold``: zero-pad each beat to the next square number and fold it row by row
    (187 samples -> 14 x 14). ``gaf``: Gramian angular summation field of the beat, first reduced
    to ``size`` samples by piecewise averaging (default 64) so that images stay small.
    """
    a = np.asarray(X, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected beats as a 2-D array (n, length), got shape {a.shape}")
    if method == "fold":
        side = size or fold_side(a.shape[1])
        if side * side < a.shape[1]:
            raise ValueError(f"fold size {side} is too small for {a.shape[1]} samples (need {fold_side(a.shape[1])})")
        out = np.zeros((a.shape[0], side * side), dtype=np.float32)
        out[:, : a.shape[1]] = a
        return out.reshape(a.shape[0], side, side, 1)
    if method == "gaf":
        return gramian_angular_field(a, size or 64)[..., None]
    raise ValueError(f"unknown 2-D method {method!r}; choose one of {', '.join(TWO_D_METHODS)}")


def gramian_angular_field(X: np.ndarray, size: int) -> np.ndarray:
    """Gramian angular summation field ``cos(phi_i + phi_j)`` of each beat, ``(n, size, size)``."""
    a = _piecewise_mean(np.asarray(X, dtype=np.float32), size)
    lo = a.min(axis=1, keepdims=True)
    span = a.max(axis=1, keepdims=True) - lo
    scaled = np.where(span > 0, 2 * (a - lo) / np.where(span > 0, span, 1) - 1, 0).astype(np.float32)
    scaled = np.clip(scaled, -1, 1)
    sine = np.sqrt(1 - scaled**2)
    # cos(a + b) = cos a cos b - sin a sin b
    return (scaled[:, :, None] * scaled[:, None, :] - sine[:, :, None] * sine[:, None, :]).astype(np.float32)


def _piecewise_mean(a: np.ndarray, size: int) -> np.ndarray:
    """Piecewise aggregate approximation: average ``a`` over ``size`` equal spans of samples."""
    n = a.shape[1]
    if size >= n:
        return a
    edges = np.linspace(0, n, size + 1).round().astype(int)
    sums = np.add.reduceat(a, edges[:-1], axis=1)
    return (sums / np.diff(edges)).astype(np.float32)


def input_shape(length: int, kind: str = "1d", method: str = "fold", size: int | None = None) -> tuple[int, ...]:
    """Network input shape for beats of ``length`` samples under the given reshape."""
    if kind == "1d":
        return (length, 1)
    if method == "fold":
        side = size or fold_side(length)
        return (side, side, 1)
    side = min(size or 64, length)
    return (side, side, 1)


def reshape(X: np.ndarray | pd.DataFrame, kind: str = "1d", method: str = "fold", size: int | None = None) -> np.ndarray:
    """Apply :func:`to_1d` or :func:`to_2d` by name."""
    if kind == "1d":
        return to_1d(X)
    if kind == "2d":
        return to_2d(X, method=method, size=size)
    raise ValueError(f"unknown input kind {kind!r}; choose 1d or 2d")

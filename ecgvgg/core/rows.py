"""The layout of a beats table's row: beat channels, then their reference beats, then rhythm values.

``prepare`` writes each lead's beat (``x0..``, ``x2_0..``), then each lead's reference beat
(``ref0..``, ``ref2_0..``), then the rhythm columns; a model reads its rows in that order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def reference_channels(channels: Sequence[str]) -> int:
    """How many of the channel prefixes ``channels`` are reference beats (those named ``ref...``, the last ones)."""
    return sum(str(n).startswith("ref") for n in channels)


def samples_per_channel(width: int, rhythm: int, channels: int) -> int:
    """Samples of one channel's beat in rows of ``width`` values that end with ``rhythm`` rhythm values."""
    return (width - rhythm) // max(1, channels)


def split_rows(
    X: np.ndarray, channels: int = 1, references: int = 0, rhythm: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``(beat channels..., reference channels..., rhythm...)`` as the beats ``(n, channels - references,
    length)`` (the first ``references`` of them have a reference), the reference beats ``(n, references,
    length)`` and the rhythm values ``(n, rhythm)``."""
    X = np.asarray(X, dtype=np.float32)
    beats, r = (X[:, :-rhythm], X[:, -rhythm:]) if rhythm else (X, X[:, :0])
    signal = beats.reshape(len(X), max(1, channels), samples_per_channel(X.shape[1], rhythm, channels))
    return signal[:, : max(1, channels) - references], signal[:, max(1, channels) - references :], r


def relative_rows(X: np.ndarray, channels: int = 1, references: int = 0, rhythm: int = 0) -> np.ndarray:
    """Rows ``(beat channels..., reference channels..., rhythm...)`` as their beats, each referenced beat minus its
    reference (the reference channels left out), and then their rhythm values."""
    own, refs, r = split_rows(X, channels, references, rhythm)
    if references:
        own = own.copy()
        own[:, :references] -= refs
    return np.hstack([own.reshape(len(own), -1), r])

"""Beats with the real MIT-BIH shape and class mix, built from the bundled sample's class templates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecgvgg import sample_path

#: Kaggle MIT-BIH training split: N 72,471 / S 2,223 / V 5,788 / F 641 / Q 6,431 = 87,554 beats.
MITBIH_TRAIN_COUNTS = {0: 72_471, 1: 2_223, 2: 5_788, 3: 641, 4: 6_431}


def synthetic_beats(counts: dict[int, int] = MITBIH_TRAIN_COUNTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 beats: a random real beat of the class plus noise, in the given class counts."""
    rng = np.random.default_rng(seed)
    df = pd.read_parquet(sample_path())
    beats = df.filter(like="x").to_numpy(np.float32)
    labels = df["label"].to_numpy()
    X = np.empty((sum(counts.values()), beats.shape[1]), dtype=np.float32)
    y = np.empty(len(X), dtype=np.int64)
    start = 0
    for c, n in counts.items():
        pool = beats[labels == c]
        X[start : start + n] = pool[rng.integers(0, len(pool), n)]
        X[start : start + n] += rng.normal(0, 0.02, (n, X.shape[1])).astype(np.float32)
        y[start : start + n] = c
        start += n
    return X, y

"""Grouped 5-fold cross-validation of the ecgvgg pipeline against baselines on real MIT-BIH beats.

    python benchmarks/accuracy.py                      # the README table: both shared files, 2 seeds
    python benchmarks/accuracy.py --data PATH --models vgg1d rf --folds 5 --seeds 0

The folds are ecgvgg's own cross-validation (:func:`ecgvgg.core.resampling.cv_folds`, exactly what
``ecgvgg run CONFIG --set split.folds=5`` uses): grouped by ``segment`` (no source window in
both training and test) and stratified; each fold's training side is split again by group into
training and validation (for early stopping), and only the training part is oversampled. In
every fold each model sees the same test beats. Models:

* ``vgg1d`` / ``vgg2d``: the pipeline as configured in pipelines/adasyn_vgg.yaml / adasyn_vgg2d.yaml
  (the single model that a cross-validated run trains per fold);
* ``vgg1d_tta``: ``vgg1d`` with test-time augmentation: the softmax averaged over the test beat
  shifted by -2..2 samples (the same trained network as ``vgg1d`` when both are run);
* ``vgg1d_ensemble``: the fold ensemble that a cross-validated run logs, built inside each outer
  fold: ``--inner-folds`` models cross-validated on the outer training side, their softmax
  outputs averaged, scored on the outer test fold (so it is comparable with ``vgg1d``);
* ``vgg1d_plain``: the same 1D pipeline with ``sampler: none`` and no class weights;
* ``rf``: a random forest (300 trees) on the raw rows;
* ``cnn``: a small plain 1D CNN of the kind used on the MIT-BIH heartbeat CSVs (no resampling,
  no class weights).

Prints a Markdown table and writes it, with a CSV of every fold, under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_DATA = [SHARED / "mitbih_beats_imbalanced.parquet", SHARED / "mitbih_beats.parquet"]
MODELS = ("vgg1d", "vgg1d_tta", "vgg1d_ensemble", "vgg2d", "vgg1d_plain", "rf", "cnn")
DEFAULT_MODELS = ["vgg1d", "vgg1d_tta", "rf", "cnn"]
NAMES = ["N", "S", "V", "F", "Q"]


def _train_fold(cfg, X, y, train, val, test, seed: int):
    """Oversample ``train`` only, train the configured network (ecgvgg's own fold), return it with the
    fold's shaped test beats."""
    from ecgvgg.core.config import override
    from ecgvgg.core.dataset import StudyData
    from ecgvgg.core.folds import Fold
    from ecgvgg.core.shapes import reshape
    from ecgvgg.core.study import run_fold

    cfg = override(cfg, {"split.seed": seed, "training.seed": seed, "baseline": "none"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run_fold(cfg, StudyData.from_arrays(X, y), Fold(train, val, test))
    return out.model, reshape(X[test], cfg.input.kind, cfg.input.method, cfg.input.size)


def pipeline_fold(config: str, overrides: list[str], X, y, fold, seed: int):
    """Train the ecgvgg pipeline as a config file describes it; return the model and the shaped test beats."""
    from ecgvgg.core.config import load_config

    cfg = load_config(ROOT / "pipelines" / config, overrides)
    return _train_fold(cfg, X, y, *fold, seed)


def shifted(X: np.ndarray, k: int) -> np.ndarray:
    """Beats ``(n, samples, 1)`` moved ``k`` samples right (left when negative), zeros filling in."""
    out = np.zeros_like(X)
    if k >= 0:
        out[:, k:] = X[:, : X.shape[1] - k]
    else:
        out[:, :k] = X[:, -k:]
    return out


def tta_predict(model, X_test: np.ndarray, reach: int = 2) -> np.ndarray:
    """Classes from the softmax averaged over the beats shifted by ``-reach..reach`` samples."""
    probs = sum(model.predict(shifted(X_test, k), verbose=0) for k in range(-reach, reach + 1))
    return np.argmax(probs, axis=1)


def ensemble_fold(overrides: list[str], X, y, g, fold, seed: int, inner: int) -> np.ndarray:
    """Predict the test fold with a fold ensemble cross-validated on the fold's training side."""
    from ecgvgg.core.config import load_config
    from ecgvgg.core.models import fold_ensemble
    from ecgvgg.core.folds import cv_folds

    cfg = load_config(ROOT / "pipelines" / "adasyn_vgg.yaml", overrides)
    train, val, test = fold
    rest = np.sort(np.r_[train, val])
    members, X_test = [], None
    for tr, va, _ in cv_folds(y[rest], folds=inner, groups=g[rest], val_size=cfg.split.val_size, seed=seed, classes=range(5)):
        model, X_test = _train_fold(cfg, X, y, rest[tr], rest[va], test, seed)
        members.append(model)
    return np.argmax(fold_ensemble(members).predict(X_test, verbose=0), axis=1)


def rf_fold(X, y, train, test, seed: int) -> np.ndarray:
    """The baseline every run logs: a random forest, 300 trees, balanced class weights, on the raw rows."""
    from ecgvgg.core.baselines import random_forest_predict

    return random_forest_predict(X[train], y[train], X[test], seed=seed)


def cnn_fold(X, y, fold, seed: int) -> np.ndarray:
    """A small plain 1D CNN (three conv blocks, one dense layer), no resampling, no class weights."""
    import keras
    from keras import layers

    from ecgvgg.core.folds import oversample_fold

    s = oversample_fold(X, y, *fold, sampler="none", seed=seed, classes=range(5))
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy("float32")
    inputs = keras.Input((X.shape[1], 1))
    h = inputs
    for filters in (32, 32, 64):
        h = layers.Conv1D(filters, 5, padding="same", activation="relu")(h)
        h = layers.Conv1D(filters, 5, padding="same", activation="relu")(h)
        h = layers.MaxPooling1D(2)(h)
    h = layers.Flatten()(h)
    h = layers.Dense(64, activation="relu")(h)
    model = keras.Model(inputs, layers.Dense(5, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)
    model.fit(
        s.X_train[..., None],
        s.y_train,
        batch_size=128,
        epochs=60,
        verbose=0,
        validation_data=(s.X_val[..., None], s.y_val),
        callbacks=[stop],
    )
    return np.argmax(model.predict(s.X_test[..., None], verbose=0), axis=1)


def run(data: Path, models: list[str], folds: int, seed: int, overrides: list[str] = (), inner: int = 3) -> pd.DataFrame:
    """One row per (model, fold) with macro-F1, accuracy and per-class recall."""
    from ecgvgg.core.metrics import per_class_scores
    from ecgvgg.core.folds import cv_folds

    frame = pd.read_parquet(data)
    X = frame.filter(regex=r"^x\d+$").to_numpy(np.float32)
    y = frame["label"].to_numpy(np.int64)
    g = frame["segment"].astype(str).to_numpy()
    rows = []
    for k, fold in enumerate(cv_folds(y, folds=folds, groups=g, val_size=0.1, seed=seed, classes=range(5))):
        train, val, test = fold
        trained = None  # the vgg1d network of this fold, shared by vgg1d and vgg1d_tta
        for name in models:
            t0 = time.perf_counter()
            if name == "rf":
                pred = rf_fold(X, y, np.r_[train, val], test, seed)
            elif name == "cnn":
                pred = cnn_fold(X, y, fold, seed)
            elif name == "vgg1d_ensemble":
                pred = ensemble_fold(overrides, X, y, g, fold, seed, inner)
            elif name in ("vgg1d", "vgg1d_tta"):
                trained = trained or pipeline_fold("adasyn_vgg.yaml", overrides, X, y, fold, seed)
                model, X_test = trained
                pred = tta_predict(model, X_test) if name == "vgg1d_tta" else np.argmax(model.predict(X_test, verbose=0), 1)
            else:
                config = "adasyn_vgg2d.yaml" if name == "vgg2d" else "adasyn_vgg.yaml"
                extra = ["resampling.sampler=none", "training.class_weight=none"] if name == "vgg1d_plain" else []
                model, X_test = pipeline_fold(config, [*overrides, *extra], X, y, fold, seed)
                pred = np.argmax(model.predict(X_test, verbose=0), axis=1)
            s = per_class_scores(y[test], pred, range(5))
            rows.append(
                {
                    "data": data.name,
                    "model": name,
                    "seed": seed,
                    "fold": k,
                    "macro_f1": s["macro_f1"],
                    "accuracy": s["accuracy"],
                    **{f"recall_{NAMES[c]}": s["recall"][c] for c in range(5)},
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(
                f"{data.name} seed {seed} fold {k} {name}: macro-F1 {s['macro_f1']:.3f} "
                f"min recall {min(s['recall'].values()):.2f} ({rows[-1]['seconds']} s)",
                file=sys.stderr,
                flush=True,
            )
    return pd.DataFrame(rows)


def versus(part: pd.DataFrame, other: pd.DataFrame) -> str:
    """Mean fold-by-fold macro-F1 difference from ``other`` (same seeds and folds) with its standard error.

    Each seed partitions the same beats into folds again, so the folds of two seeds are not
    independent replicates: the standard error divides by the number of folds per seed, not by
    the number of (seed, fold) pairs.
    """
    d = (part.set_index(["seed", "fold"])["macro_f1"] - other.set_index(["seed", "fold"])["macro_f1"]).dropna()
    folds = d.index.get_level_values("fold").nunique()
    return f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(folds):.3f}" if len(d) > 1 and folds > 1 else "-"


def summarise(df: pd.DataFrame) -> str:
    """Mean (and std of macro-F1) over folds, one line per data file and model, with the paired
    difference from the random forest when it was run."""
    lines = [
        "| data | model | macro-F1 (mean ± sd over folds) | vs rf (paired mean ± se) | accuracy | "
        + " | ".join(f"recall {n}" for n in NAMES)
        + " | s/fold |",
        "|---|---|---|---|---|" + "---|" * len(NAMES) + "---|",
    ]
    for (data, model), part in df.groupby(["data", "model"], sort=False):
        recalls = " | ".join(f"{part[f'recall_{n}'].mean():.3f}" for n in NAMES)
        rf = df[(df["data"] == data) & (df["model"] == "rf")]
        lines.append(
            f"| {data} | {model} | {part['macro_f1'].mean():.3f} ± {part['macro_f1'].std():.3f} | "
            f"{versus(part, rf) if len(rf) and model != 'rf' else '-'} | "
            f"{part['accuracy'].mean():.3f} | {recalls} | {part['seconds'].mean():.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", type=Path, default=DEFAULT_DATA)
    p.add_argument("--models", nargs="+", choices=MODELS, default=DEFAULT_MODELS)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="split and training seeds (means over all)")
    p.add_argument("--inner-folds", type=int, default=3, help="folds of each fold ensemble (vgg1d_ensemble)")
    p.add_argument("--out", default="accuracy", help="file stem under benchmarks/results/")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], help="override the pipeline configs, key.path=value (repeatable)"
    )
    a = p.parse_args()
    missing = [str(d) for d in a.data if not d.is_file()]
    if missing:
        sys.exit(f"error: no such file: {', '.join(missing)} (the real beats ship in ../shared/data; pass --data PATH)")
    df = pd.concat(
        [run(d, a.models, a.folds, seed, a.overrides, a.inner_folds) for d in a.data for seed in a.seeds], ignore_index=True
    )
    table = summarise(df)
    print(table)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{a.out}.md").write_text(table + "\n")
    df.to_csv(out / f"{a.out}_folds.csv", index=False)


if __name__ == "__main__":
    main()

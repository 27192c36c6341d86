"""Grouped 5-fold cross-validation of the ecgvgg pipeline against baselines on real MIT-BIH beats.

    python benchmarks/accuracy.py                      # both shared files, every model
    python benchmarks/accuracy.py --data PATH --models vgg1d rf --folds 5

Folds are grouped by ``segment`` (no source window in both training and test) and stratified.
In every fold each model sees the same test beats; the training side is split again by group
into training and validation (for early stopping) before any oversampling. Models:

* ``vgg1d`` / ``vgg2d``: the pipeline as configured in pipelines/adasyn_vgg.yaml / adasyn_vgg2d.yaml;
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
from sklearn.model_selection import StratifiedGroupKFold

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_DATA = [SHARED / "mitbih_beats_imbalanced.parquet", SHARED / "mitbih_beats.parquet"]
MODELS = ("vgg1d", "vgg2d", "vgg1d_plain", "rf", "cnn")
NAMES = ["N", "S", "V", "F", "Q"]


def pipeline_fold(config: str, overrides: list[str], X, y, g, test_groups, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Predict the test fold with the ecgvgg pipeline as a config file describes it."""
    from ecgvgg.config import load_config
    from ecgvgg.pipeline import build_model, train
    from ecgvgg.resampling import split_then_oversample
    from ecgvgg.shapes import reshape
    from ecgvgg.training import setup_device

    cfg = load_config(ROOT / "pipelines" / config, overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = split_then_oversample(X, y, groups=g, test_groups=test_groups, val_size=cfg.split.val_size,
                                       sampler=cfg.resampling.sampler, sampler_params=cfg.resampling.params,
                                       seed=seed, classes=range(5))
    shaped = splits.map_x(lambda a: reshape(a, cfg.input.kind, cfg.input.method, cfg.input.size))
    setup_device(seed=seed, mixed_precision=cfg.training.mixed_precision)
    model = build_model(cfg, X.shape[1])
    train(cfg, model, shaped, seed=seed)
    return np.argmax(model.predict(shaped.X_test, verbose=0), axis=1), splits.test_index


def rf_fold(X, y, train, test, seed: int) -> np.ndarray:
    """Random forest, 300 trees, on the raw rows."""
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=300, n_jobs=-1, random_state=seed)
    return rf.fit(X[train], y[train]).predict(X[test])


def cnn_fold(X, y, g, test_groups, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A small plain 1D CNN (three conv blocks, one dense layer), no resampling, no class weights."""
    import keras
    from keras import layers

    from ecgvgg.resampling import split_then_oversample

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = split_then_oversample(X, y, groups=g, test_groups=test_groups, val_size=0.15, sampler="none",
                                  seed=seed, classes=range(5))
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
    model.fit(s.X_train[..., None], s.y_train, batch_size=128, epochs=60, verbose=0,
              validation_data=(s.X_val[..., None], s.y_val), callbacks=[stop])
    return np.argmax(model.predict(s.X_test[..., None], verbose=0), axis=1), s.test_index


def run(data: Path, models: list[str], folds: int, seed: int, overrides: list[str] = ()) -> pd.DataFrame:
    """One row per (model, fold) with macro-F1, accuracy and per-class recall."""
    from ecgvgg.metrics import per_class_scores

    frame = pd.read_parquet(data)
    X = frame.filter(regex=r"^x\d+$").to_numpy(np.float32)
    y = frame["label"].to_numpy(np.int64)
    g = frame["segment"].astype(str).to_numpy()
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    rows = []
    for fold, (train, test) in enumerate(cv.split(X, y, g)):
        test_groups = set(g[test])
        for name in models:
            t0 = time.perf_counter()
            if name == "rf":
                pred, idx = rf_fold(X, y, train, test, seed), test
            elif name == "cnn":
                pred, idx = cnn_fold(X, y, g, test_groups, seed)
            else:
                config = "adasyn_vgg2d.yaml" if name == "vgg2d" else "adasyn_vgg.yaml"
                extra = ["resampling.sampler=none", "training.class_weight=none"] if name == "vgg1d_plain" else []
                pred, idx = pipeline_fold(config, [*overrides, *extra], X, y, g, test_groups, seed)
            assert set(idx) == set(test)  # every model is scored on the same beats
            s = per_class_scores(y[idx], pred, range(5))
            rows.append({"data": data.name, "model": name, "fold": fold, "macro_f1": s["macro_f1"],
                         "accuracy": s["accuracy"], **{f"recall_{NAMES[c]}": s["recall"][c] for c in range(5)},
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{data.name} fold {fold} {name}: macro-F1 {s['macro_f1']:.3f} "
                  f"min recall {min(s['recall'].values()):.2f} ({rows[-1]['seconds']} s)", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> str:
    """Mean (and std of macro-F1) over folds, one line per data file and model."""
    lines = ["| data | model | macro-F1 | accuracy | " + " | ".join(f"recall {n}" for n in NAMES) + " | s/fold |",
             "|---|---|---|---|" + "---|" * len(NAMES) + "---|"]
    for (data, model), part in df.groupby(["data", "model"], sort=False):
        recalls = " | ".join(f"{part[f'recall_{n}'].mean():.3f}" for n in NAMES)
        lines.append(f"| {data} | {model} | {part['macro_f1'].mean():.3f} ± {part['macro_f1'].std():.3f} | "
                     f"{part['accuracy'].mean():.3f} | {recalls} | {part['seconds'].mean():.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", type=Path, default=DEFAULT_DATA)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="accuracy", help="file stem under benchmarks/results/")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="override the pipeline configs, key.path=value (repeatable)")
    a = p.parse_args()
    df = pd.concat([run(d, a.models, a.folds, a.seed, a.overrides) for d in a.data], ignore_index=True)
    table = summarise(df)
    print(table)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{a.out}.md").write_text(table + "\n")
    df.to_csv(out / f"{a.out}_folds.csv", index=False)


if __name__ == "__main__":
    main()

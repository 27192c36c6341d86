"""Transfer learning on real MIT-BIH beats: pretrain on some windows, fine-tune on a few labelled beats of others.

    python benchmarks/transfer.py                     # ../shared/data/mitbih_beats.parquet, seeds 0 1
    python benchmarks/transfer.py --data PATH --sizes 10 50 200 --seeds 0

The balanced pool's windows (``segment``) are split by group into a source half and a target
half. The network of ``pipelines/adasyn_vgg.yaml`` is pretrained on the source half. The target
half is split by group again into a labelled pool and a test set; from the pool, ``n`` beats per
class are drawn, and three models are trained on them for the same number of epochs:

* ``scratch``: a new network;
* ``fine-tuned``: the pretrained network, every layer trained (at a tenth of the learning rate);
* ``frozen``: the pretrained network with convolution blocks 1-4 frozen (``model.frozen_blocks: 4``).

Every model is scored on the same target test beats. Prints a Markdown table (macro-F1, parameters
trained, seconds) and writes it under benchmarks/results/.
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
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mitbih_beats.parquet"


def _splits(X, y, train, val, test):
    from ecgvgg.resampling import oversample_split
    from ecgvgg.shapes import to_1d

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return oversample_split(X, y, train, val, test, sampler="none", classes=range(5)).map_x(to_1d)


def run(data: Path, sizes: list[int], seed: int, epochs: int) -> list[dict]:
    """One row per (size, model) for this seed."""
    import keras

    from ecgvgg.config import load_config
    from ecgvgg.metrics import per_class_scores
    from ecgvgg.models import freeze_blocks, trainable_count
    from ecgvgg.pipeline import build_model, train
    from ecgvgg.resampling import cv_folds
    from ecgvgg.training import setup_device

    cfg = load_config(ROOT / "pipelines" / "adasyn_vgg.yaml", ["training.early_stopping_patience=0"])
    frame = pd.read_parquet(data)
    X = frame.filter(regex=r"^x\d+$").to_numpy(np.float32)
    y = frame["label"].to_numpy(np.int64)
    g = frame["segment"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    # source half / target half by window; the target half again into a labelled pool and a test set
    # the first of two grouped folds: its test part is the target half, the rest the source half
    source_train, src_val, target = cv_folds(y, folds=2, groups=g, val_size=0.1, seed=seed, classes=range(5))[0]
    pool, test = [], []
    target_groups = np.unique(g[target])
    rng.shuffle(target_groups)
    pool_groups = set(target_groups[: len(target_groups) // 2])
    for i in target:
        (pool if g[i] in pool_groups else test).append(i)
    pool, test = np.array(pool), np.array(test)

    setup_device(seed=seed, mixed_precision=False)
    t0 = time.perf_counter()
    pretrained = build_model(cfg, X.shape[1])
    train(cfg, pretrained, _splits(X, y, source_train, src_val, test), epochs=cfg.training.epochs,
          early_stopping_patience=8)
    print(f"seed {seed}: pretrained on {len(source_train)} beats in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)

    rows = []
    for n in sizes:
        labelled = np.concatenate([rng.choice(pool[y[pool] == c], size=min(n, int(np.sum(y[pool] == c))),
                                              replace=False) for c in range(5)])
        splits = _splits(X, y, labelled, labelled, test)
        for name in ("scratch", "fine-tuned", "frozen"):
            setup_device(seed=seed, mixed_precision=False)
            if name == "scratch":
                model, rate = build_model(cfg, X.shape[1]), cfg.training.learning_rate
            else:
                model = keras.models.clone_model(pretrained)
                model.set_weights(pretrained.get_weights())
                rate = cfg.training.learning_rate / 10 if name == "fine-tuned" else cfg.training.learning_rate
                if name == "frozen":
                    freeze_blocks(model, 4)
            t0 = time.perf_counter()
            train(cfg, model, splits, epochs=epochs, learning_rate=rate, early_stopping_patience=None,
                  reduce_lr_patience=None, batch_size=min(64, len(labelled)))
            seconds = time.perf_counter() - t0
            pred = np.argmax(model.predict(splits.X_test, verbose=0), axis=1)
            s = per_class_scores(y[test], pred, range(5))
            rows.append({"seed": seed, "beats_per_class": n, "model": name, "macro_f1": s["macro_f1"],
                         "params_trained": trainable_count(model), "seconds": round(seconds, 1),
                         "test_beats": len(test)})
            print(f"seed {seed} n={n} {name}: macro-F1 {s['macro_f1']:.3f} ({seconds:.0f} s)", file=sys.stderr,
                  flush=True)
    return rows


def summarise(df: pd.DataFrame) -> str:
    """Mean over seeds, one line per (size, model)."""
    lines = ["| beats per class | model | macro-F1 | params trained | seconds |", "|---|---|---|---|---|"]
    for (n, name), part in df.groupby(["beats_per_class", "model"], sort=False):
        sd = f" ± {part['macro_f1'].std():.3f}" if len(part) > 1 else ""
        lines.append(f"| {n} | {name} | {part['macro_f1'].mean():.3f}{sd} | {int(part['params_trained'].iloc[0]):,} | "
                     f"{part['seconds'].mean():.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sizes", nargs="+", type=int, default=[10, 50, 200])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=30, help="fine-tuning epochs for every model")
    p.add_argument("--out", default="transfer", help="file stem under benchmarks/results/")
    a = p.parse_args()
    df = pd.DataFrame([row for seed in a.seeds for row in run(a.data, a.sizes, seed, a.epochs)])
    table = summarise(df)
    print(table)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{a.out}.md").write_text(table + "\n")
    df.to_csv(out / f"{a.out}_runs.csv", index=False)


if __name__ == "__main__":
    main()

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


def run(data: Path, sizes: list[int], seed: int, epochs: int) -> list[dict]:
    """One row per (size, model) for this seed; every network trains through ecgvgg's own fold."""
    import tempfile

    from ecgvgg.core.config import load_config, override
    from ecgvgg.core.dataset import StudyData
    from ecgvgg.core.folds import Fold, cv_folds
    from ecgvgg.core.inference import save_model
    from ecgvgg.core.models import trainable_count
    from ecgvgg.core.study import run_fold

    cfg = load_config(ROOT / "pipelines" / "adasyn_vgg.yaml", ["training.early_stopping_patience=0"])
    cfg = override(
        cfg,
        {
            "resampling.sampler": "none",
            "baseline": "none",
            "training.seed": seed,
            "split.seed": seed,
            "training.mixed_precision": False,
        },
    )
    frame = pd.read_parquet(data)
    X = frame.filter(regex=r"^x\d+$").to_numpy(np.float32)
    y = frame["label"].to_numpy(np.int64)
    g = frame["segment"].astype(str).to_numpy()
    study_data = StudyData.from_arrays(X, y, g)
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

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrained = run_fold(
            override(cfg, {"training.early_stopping_patience": 8}), study_data, Fold(source_train, src_val, test)
        )
    print(
        f"seed {seed}: pretrained on {len(source_train)} beats in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True
    )
    source = Path(tempfile.mkdtemp()) / "pretrained.keras"
    save_model(pretrained.model, source, pretrained.contract)

    rows = []
    for n in sizes:
        labelled = np.concatenate(
            [rng.choice(pool[y[pool] == c], size=min(n, int(np.sum(y[pool] == c))), replace=False) for c in range(5)]
        )
        small = {"training.epochs": epochs, "training.reduce_lr_patience": 0, "training.batch_size": min(64, len(labelled))}
        settings = {
            "scratch": ({}, None),
            "fine-tuned": ({"training.learning_rate": cfg.training.learning_rate / 10}, source),
            "frozen": ({"model.frozen_blocks": 4}, source),
        }
        for name, (changes, start) in settings.items():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = run_fold(override(cfg, {**small, **changes}), study_data, Fold(labelled, labelled, test), source=start)
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "seed": seed,
                    "beats_per_class": n,
                    "model": name,
                    "macro_f1": out.scores["macro_f1"],
                    "params_trained": trainable_count(out.model),
                    "seconds": round(seconds, 1),
                    "test_beats": len(test),
                }
            )
            print(
                f"seed {seed} n={n} {name}: macro-F1 {out.scores['macro_f1']:.3f} ({seconds:.0f} s)", file=sys.stderr, flush=True
            )
    return rows


def summarise(df: pd.DataFrame) -> str:
    """Mean over seeds, one line per (size, model)."""
    lines = ["| beats per class | model | macro-F1 | params trained | seconds |", "|---|---|---|---|---|"]
    for (n, name), part in df.groupby(["beats_per_class", "model"], sort=False):
        sd = f" ± {part['macro_f1'].std():.3f}" if len(part) > 1 else ""
        lines.append(
            f"| {n} | {name} | {part['macro_f1'].mean():.3f}{sd} | {int(part['params_trained'].iloc[0]):,} | "
            f"{part['seconds'].mean():.0f} |"
        )
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

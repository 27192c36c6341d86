"""MIT-BIH scale: time and peak memory of load -> split -> ADASYN -> tf.data, then VGG16-1D training speed.

    python benchmarks/scale.py [--models 1.0:4096 0.25:256] [--steps 20] [--batch 256] [--mixed-precision]

Generated beats with the real shape and class mix (87,554 x 187 float32, N 72,471 / S 2,223 /
V 5,788 / F 641 / Q 6,431) are written to a headerless Kaggle-style CSV first, so that loading
is measured too. Training speed is samples per second over ``--steps`` batches, after one
warm-up pass of the same batches.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["1.0:4096", "0.25:4096", "0.25:256"],
                   help="WIDTH:DENSE_UNITS of each VGG16-1D to time")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--mixed-precision", action="store_true")
    a = p.parse_args()

    import numpy as np
    from _synthetic import synthetic_beats

    from ecgvgg.data import load_xy
    from ecgvgg.folds import split_then_oversample
    from ecgvgg.shapes import to_1d

    X, y = synthetic_beats()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mitbih_train_like.csv"
        np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt="%.6g")
        size_mb = path.stat().st_size / 2**20
        del X, y
        stages = []
        base = peak_rss_mb()
        t = time.perf_counter()
        Xd, yd, _ = load_xy(path, header=False)
        stages.append(("load CSV (%.0f MB) as float32" % size_mb, time.perf_counter() - t, peak_rss_mb()))
    t = time.perf_counter()
    splits = split_then_oversample(Xd, yd, sampler="adasyn", seed=0)
    stages.append(("split + ADASYN (training split only)", time.perf_counter() - t, peak_rss_mb()))
    del Xd

    import keras
    import tensorflow as tf

    from ecgvgg.models import vgg16
    from ecgvgg.inputs import make_dataset
    from ecgvgg.training import setup_device

    shaped = splits.map_x(to_1d)
    t = time.perf_counter()
    ds = make_dataset(shaped.X_train, shaped.y_train, a.batch, shuffle=True)
    for _ in ds.take(50):
        pass
    stages.append(("tf.data pipeline + 50 batches", time.perf_counter() - t, peak_rss_mb()))

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"rows: {len(splits.train_index) + len(splits.val_index) + len(splits.test_index)} x "
          f"{shaped.X_train.shape[1]}; training split {len(splits.train_index)} -> {len(shaped.X_train)} rows "
          f"after ADASYN ({shaped.X_train.nbytes / 2**20:.0f} MB float32, dtype {shaped.X_train.dtype}); "
          f"process RSS before loading {base:.0f} MB")
    print("\n| stage | seconds | peak RSS (MB) |\n|---|---|---|")
    for name, secs, rss in stages:
        print(f"| {name} | {secs:.2f} | {rss:.0f} |")

    print(f"\n| model | width | dense units | params | batch | mixed precision | device | samples/s | est. epoch (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in a.models:
        width, dense = float(spec.split(":")[0]), int(spec.split(":")[1])
        setup_device(mixed_precision=a.mixed_precision, seed=0)
        model = vgg16(width=width, dense_units=dense)
        model.compile(keras.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
        batches = make_dataset(shaped.X_train, shaped.y_train, a.batch, shuffle=True).take(a.steps).cache()
        model.fit(batches, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing and first allocations
        t = time.perf_counter()
        model.fit(batches, epochs=1, verbose=0, shuffle=False)
        rate = a.steps * a.batch / (time.perf_counter() - t)
        print(f"| VGG16-1D | {width} | {dense} | {model.count_params():,} | {a.batch} | {a.mixed_precision} | {device} | "
              f"{rate:,.0f} | {len(shaped.X_train) / rate:,.0f} |")


if __name__ == "__main__":
    main()

"""MIT-BIH scale: time and peak memory of load -> split -> ADASYN -> tf.data, then VGG16-1D training speed.

    python benchmarks/scale.py [--models 1.0:4096 0.25:256] [--steps 20] [--batch 256] [--mixed-precision]
    python benchmarks/scale.py --gpu [--budget-s 420] [--out benchmarks/results/gpu.md]

Generated beats with the real shape and class mix (87,554 x 187 float32, N 72,471 / S 2,223 /
V 5,788 / F 641 / Q 6,431) are written to a headerless Kaggle-style CSV first, so that loading
is measured too. Training speed is samples per second over ``--steps`` batches, after one
warm-up pass of the same batches.

``--gpu`` writes the GPU table instead, in one run made to fit in a few minutes: the paper-size
network (``--models``, default width 1.0 with 4,096 dense units) on the same MIT-BIH-sized
training split, in float32 and in mixed precision, each with its samples/s at ``--batch``, the
epoch time that implies, one measured epoch through the real input pipeline, and the largest
power-of-two batch that trains (doubled until TensorFlow runs out of device memory, up to
``--max-batch``). Parts that would pass ``--budget-s`` are skipped and say so. It refuses to run
without a GPU unless ``--any-device`` (to try the script on a CPU with a small ``--models``).
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
    p.add_argument(
        "--models", nargs="+", default=["1.0:4096", "0.25:4096", "0.25:256"], help="WIDTH:DENSE_UNITS of each VGG16-1D to time"
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--gpu", action="store_true", help="write the GPU table (float32 against mixed precision)")
    p.add_argument("--budget-s", type=float, default=420, help="--gpu: skip what would run past this many seconds")
    p.add_argument("--max-batch", type=int, default=65536, help="--gpu: largest batch tried")
    p.add_argument("--any-device", action="store_true", help="--gpu: run without a GPU too")
    p.add_argument("--out", type=Path, help="--gpu: also write the table to this Markdown file")
    a = p.parse_args()
    if a.gpu:
        gpu_table(a)
        return

    import numpy as np
    from _synthetic import synthetic_beats

    from ecgvgg.core.data import load_xy
    from ecgvgg.core.folds import split_then_oversample
    from ecgvgg.core.shapes import to_1d

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

    from ecgvgg.core.models import vgg16
    from ecgvgg.core.inputs import make_dataset
    from ecgvgg.core.training import setup_device

    shaped = splits.map_x(to_1d)
    t = time.perf_counter()
    ds = make_dataset(shaped.X_train, shaped.y_train, a.batch, shuffle=True)
    for _ in ds.take(50):
        pass
    stages.append(("tf.data pipeline + 50 batches", time.perf_counter() - t, peak_rss_mb()))

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(
        f"rows: {len(splits.train_index) + len(splits.val_index) + len(splits.test_index)} x "
        f"{shaped.X_train.shape[1]}; training split {len(splits.train_index)} -> {len(shaped.X_train)} rows "
        f"after ADASYN ({shaped.X_train.nbytes / 2**20:.0f} MB float32, dtype {shaped.X_train.dtype}); "
        f"process RSS before loading {base:.0f} MB"
    )
    print("\n| stage | seconds | peak RSS (MB) |\n|---|---|---|")
    for name, secs, rss in stages:
        print(f"| {name} | {secs:.2f} | {rss:.0f} |")

    print("\n| model | width | dense units | params | batch | mixed precision | device | samples/s | est. epoch (s) |")
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
        print(
            f"| VGG16-1D | {width} | {dense} | {model.count_params():,} | {a.batch} | {a.mixed_precision} | {device} | "
            f"{rate:,.0f} | {len(shaped.X_train) / rate:,.0f} |"
        )


def gpu_table(a: argparse.Namespace) -> None:
    """The GPU table: per precision, samples/s, epoch time (implied and measured) and the largest batch."""
    start = time.perf_counter()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not a.any_device:
        sys.exit("no GPU visible to TensorFlow: the --gpu table needs one (--any-device runs it anyway)")
    from _synthetic import synthetic_beats

    from ecgvgg.core.folds import split_then_oversample
    from ecgvgg.core.shapes import to_1d

    X, y = synthetic_beats()
    shaped = split_then_oversample(X, y, sampler="adasyn", seed=0).map_x(to_1d)
    del X, y
    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU"
    lines = [
        f"{device}, TensorFlow {tf.__version__}; {len(shaped.X_train):,} training rows after ADASYN "
        f"(from the {sum(len(i) for i in (shaped.train_index, shaped.val_index, shaped.test_index)):,}-beat "
        f"MIT-BIH-sized table); {a.steps} timed steps after a warm-up; data prepared in "
        f"{time.perf_counter() - start:.0f} s",
        "",
        "| model | params | precision | batch | samples/s | epoch s (implied) | epoch s (measured) | "
        "largest batch | samples/s at it |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in a.models:
        width, dense = float(spec.split(":")[0]), int(spec.split(":")[1])
        for mixed in (False, True):
            lines.append(_gpu_row(a, shaped.X_train, shaped.y_train, width, dense, mixed, start))
            print(lines[-1], flush=True)
    lines.append(f"\nwhole script: {time.perf_counter() - start:.0f} s")
    print("\n".join(lines))
    if a.out:
        a.out.write_text("\n".join(lines) + "\n")


def _gpu_row(a: argparse.Namespace, X, y, width: float, dense: int, mixed: bool, start: float) -> str:
    """One row of the GPU table; what would pass the budget is skipped and said so."""
    import gc

    import keras
    import numpy as np

    from ecgvgg.core.inputs import make_dataset
    from ecgvgg.core.models import vgg16
    from ecgvgg.core.training import setup_device

    def build():
        keras.backend.clear_session()
        gc.collect()
        with setup_device(mixed_precision=mixed, seed=0).scope():
            model = vgg16(width=width, dense_units=dense)
            model.compile(keras.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
        return model

    def left() -> float:
        return a.budget_s - (time.perf_counter() - start)

    model = build()
    params = model.count_params()
    rate = _rate(model, make_dataset(X, y, a.batch, shuffle=True).take(a.steps).cache(), a.steps * a.batch)
    implied = len(X) / rate
    measured = "skipped (budget)"
    if implied * 1.5 + 10 < left():
        t = time.perf_counter()
        model.fit(make_dataset(X, y, a.batch, shuffle=True), epochs=1, verbose=0)
        measured = f"{time.perf_counter() - t:,.1f}"
    largest, largest_rate, batch, stop = None, None, a.batch * 2, f" (--max-batch {a.max_batch:,})"
    rng = np.random.default_rng(0)
    while batch <= a.max_batch:
        if left() < 30:
            stop = f" ({batch:,} not tried: budget)"
            break
        model = build()
        xb = rng.normal(size=(batch, X.shape[1], 1)).astype(np.float32)
        yb = rng.integers(0, 5, batch)
        try:
            got = _rate(model, [(xb, yb)] * 3, 3 * batch)
        except Exception as exc:  # ResourceExhaustedError, or an internal error when cuDNN cannot allocate
            said = f"{type(exc).__name__} {exc}".lower()
            if not any(w in said for w in ("resourceexhausted", "out of memory", "oom", "alloc")):
                raise
            stop = f" ({batch:,} runs out of memory)"
            break
        largest, largest_rate, batch = batch, got, batch * 2
    if largest is None:
        largest, largest_rate = a.batch, rate
    fits = f"{largest:,}{stop}"
    return (
        f"| VGG16-1D {width}:{dense} | {params:,} | {'mixed float16' if mixed else 'float32'} | {a.batch} | "
        f"{rate:,.0f} | {implied:,.1f} | {measured} | {fits} | {largest_rate:,.0f} |"
    )


def _rate(model, batches, samples: int) -> float:
    """Training samples/s over ``batches`` (a dataset or a list of (x, y)), after one warm-up pass."""
    for _ in range(2):
        t = time.perf_counter()
        if isinstance(batches, list):
            for xb, yb in batches:
                model.train_on_batch(xb, yb)
        else:
            model.fit(batches, epochs=1, verbose=0, shuffle=False)
        elapsed = time.perf_counter() - t
    return samples / elapsed


if __name__ == "__main__":
    main()

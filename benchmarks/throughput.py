"""Training throughput of ecgvgg.core.training.fit against a plain Keras model.fit on NumPy arrays.

    python benchmarks/throughput.py [--width 0.25] [--rows 16384] [--epochs 4] [--mixed-precision]

Same model, data, batch size and class weights; both validate once per epoch (plain fit through
``validation_data``, ecgvgg through its per-class metrics callback). Throughput is training rows
per second of wall time per epoch, validation included, median over the epochs after the first.
Each run is a fresh process; the modes alternate and the median run of each is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))


def measure(mode: str, width: float, rows: int, epochs: int, mixed: bool, batch: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf
    from _synthetic import synthetic_beats

    from ecgvgg.core.config import TrainingConfig
    from ecgvgg.core.models import vgg16
    from ecgvgg.core.resampling import Splits
    from ecgvgg.core.class_weights import balanced_class_weight
    from ecgvgg.core.training import fit, setup_device

    setup_device(mixed_precision=mixed, seed=0)
    X, y = synthetic_beats()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    tr, va = idx[:rows], idx[rows : rows + rows // 8]
    X3 = X.reshape(len(X), -1, 1)
    counts = {c: int(np.sum(y[tr] == c)) for c in range(5)}
    weights = balanced_class_weight(counts)

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    model = vgg16(width=width, dense_units=256)
    if mode == "keras":
        model.compile(keras.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(
            X3[tr],
            y[tr],
            batch_size=batch,
            epochs=epochs,
            validation_data=(X3[va], y[va]),
            class_weight=weights,
            callbacks=[timer],
            verbose=0,
        )
    else:
        splits = Splits(
            X3[tr], y[tr], X3[va], y[va], X3[:0], y[:0], tr, va, va[:0], (0, 1, 2, 3, 4), "none", {"train_before": counts}
        )
        fit(
            model,
            splits,
            TrainingConfig(
                epochs=epochs, batch_size=batch, class_weight="balanced", early_stopping_patience=0, reduce_lr_patience=0
            ),
            callbacks=[timer],
        )
    steady = sorted(timer.times[1:]) or timer.times
    median = steady[len(steady) // 2]
    return {
        "mode": "ecgvgg fit" if mode == "ecgvgg" else "plain model.fit",
        "width": width,
        "rows": rows,
        "batch": batch,
        "mixed_precision": mixed,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "epoch_s": round(median, 2),
        "samples_per_s": round(rows / median),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--rows", type=int, default=16384)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2, help="alternating runs per mode; the median is reported")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.mode:
        print(json.dumps(measure(a.mode, a.width, a.rows, a.epochs, a.mixed_precision, a.batch)))
        return
    base = [
        sys.executable,
        __file__,
        "--width",
        str(a.width),
        "--rows",
        str(a.rows),
        "--epochs",
        str(a.epochs),
        "--batch",
        str(a.batch),
    ] + (["--mixed-precision"] if a.mixed_precision else [])
    runs: dict[str, list[dict]] = {"keras": [], "ecgvgg": []}
    for _ in range(a.repeats):  # alternate, so that drifting machine load hits both modes alike
        for mode in runs:
            out = subprocess.run(base + ["--mode", mode], check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
    rows = []
    for mode, results in runs.items():
        results.sort(key=lambda r: r["samples_per_s"])
        row = dict(results[len(results) // 2])
        row["all_samples_per_s"] = "/".join(str(r["samples_per_s"]) for r in results)
        rows.append(row)
    ratio = rows[1]["samples_per_s"] / rows[0]["samples_per_s"]
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    lines.append(f"\necgvgg / plain = {ratio:.3f}")
    print("\n".join(lines))
    out = Path(__file__).parent / "results" / f"throughput_w{a.width}{'_mp' if a.mixed_precision else ''}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

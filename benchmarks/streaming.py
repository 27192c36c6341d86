"""Streaming a table larger than the run needs in memory: Parquet shards read in record batches.

    python benchmarks/streaming.py [--beats 500000,3000000] [--shards 40] [--steps 100]

For each size in ``--beats``, writes that many synthetic beats (real class templates plus noise, MIT-BIH's class priors,
``record`` groups of 1,000 beats) as ``--shards`` Parquet files in a temporary folder. Then one
``ecgvgg run`` with ``data.stream: true`` and the ``balanced`` sampler checks every value, trains
one epoch of ``--steps`` batches, and scores the streamed validation and test parts (grouped by
record), in a fresh process whose peak resident memory is measured. First, the seed network's
training speed on a table that fits (``--fits`` beats, one file) fed in memory and streamed: with
every class in the stream's cache (128 MB, smallest classes first), with the majority class read
from the file on every pass (as in a table larger than the cache), and with nothing cached.
Each size's run prints ``streamed N beats (D MB) in T s, peak RSS R MB``; the last line gives the
share of the data's growth between the smallest and the largest size that stayed in memory (peak
growth over data growth: what the run keeps per row, such as labels, groups and fold positions).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import MITBIH_TRAIN_COUNTS, synthetic_beats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECORD = 1000  # beats per record
#: ``ecgvgg`` that writes its own peak resident memory (``VmHWM``: since its exec, unlike a child's
#: ``ru_maxrss``, which counts the parent's pages at the fork) to ``$PEAK_FILE`` as it exits.
_PEAK_AT_EXIT = (
    "import atexit, os, sys\n"
    "def peak():\n"
    "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "    open(os.environ['PEAK_FILE'], 'w').write(line)\n"
    "atexit.register(peak)\n"
    "sys.argv[0] = 'ecgvgg'\n"
    "from ecgvgg.cli.main import app\n"
    "app()\n"
)


def write_shards(folder: Path, beats: int, shards: int, seed: int = 0) -> None:
    """``beats`` synthetic beats in ``shards`` files, one shard in memory at a time."""
    import pandas as pd

    total = sum(MITBIH_TRAIN_COUNTS.values())
    priors = np.array([MITBIH_TRAIN_COUNTS[c] for c in range(5)]) / total
    rng = np.random.default_rng(seed)
    first = 0
    for i, n in enumerate(np.diff(np.linspace(0, beats, shards + 1).round().astype(int))):
        counts = dict(enumerate(rng.multinomial(n, priors).tolist()))
        X, y = synthetic_beats(counts, seed=seed + i)
        order = rng.permutation(n)
        frame = pd.DataFrame(X[order], columns=[f"x{j}" for j in range(X.shape[1])])
        frame["label"] = y[order]
        frame["record"] = [f"r{(first + k) // RECORD}" for k in range(n)]
        frame.to_parquet(folder / f"part-{i:03d}.parquet", index=False, row_group_size=8192)
        first += n


def run(path: Path, store: str, steps: int, stream: bool) -> tuple[float, float, dict[str, float]]:
    """One streamed (or in-memory) run in a child process: wall seconds, its peak RSS in MB, its metrics."""
    from mlflow.tracking import MlflowClient

    sets = [
        f"data.path={path}",
        f"data.stream={str(stream).lower()}",
        "data.group_column=record",
        "resampling.sampler=balanced",
        "training.epochs=1",
        f"training.steps_per_epoch={steps}",
        "training.early_stopping_patience=0",
        "training.reduce_lr_patience=0",
        "baseline=none",
        "tracking.gradcam_per_class=0",
        "tracking.experiment=streaming",
    ]
    cmd = [
        sys.executable,
        "-c",
        _PEAK_AT_EXIT,
        "run",
        str(ROOT / "pipelines" / "adasyn_vgg.yaml"),
        *[a for s in sets for a in ("--set", s)],
    ]
    peak_file = path.parent / "peak.txt"
    started = time.perf_counter()
    done = subprocess.run(
        cmd,
        env={**os.environ, "MLFLOW_TRACKING_URI": store, "TF_CPP_MIN_LOG_LEVEL": "3", "PEAK_FILE": str(peak_file)},
        cwd=path.parent,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode not in (0, 3):  # 3: a collapse verdict, still a measured run
        sys.exit(f"run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    peak = int(peak_file.read_text().split()[1])  # VmHWM, in kB
    client = MlflowClient(store)
    latest = client.search_runs(
        [client.get_experiment_by_name("streaming").experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    return wall, peak / 1024, latest.data.metrics


def speed(path: Path, steps: int, rounds: int = 3) -> dict[str, float]:
    """Training samples/s of the seed network fed by the in-memory and the streamed ``balanced`` sampler.

    Same rows, same network, no validation: alternating rounds of 2 epochs of ``steps`` batches,
    the median of the second epochs (the first builds the pipeline and traces the step).
    """
    import keras

    from ecgvgg.core.config import load_config
    from ecgvgg.core.dataset import load
    from ecgvgg.core.resampling import balanced_proportions
    from ecgvgg.core.shapes import to_1d
    from ecgvgg.core.study import build_model
    from ecgvgg.core.inputs import STREAM_CACHE_BYTES, make_dataset, streamed_batches
    from ecgvgg.core.training import make_loss

    import pyarrow.parquet as pq

    counts = np.bincount(pq.read_table(path, columns=["label"]).column("label").to_numpy())
    minority = int((counts.sum() - counts.max()) * 187 * 4) + 1  # a cache that holds all but the majority class
    modes = {
        "in memory": None,
        "streamed, every class cached": STREAM_CACHE_BYTES,
        "streamed, N read from the file each pass": minority,
        "streamed, nothing cached": 0,
    }
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, cache in modes.items():
            stream = cache is not None
            cfg = load_config(
                ROOT / "pipelines" / "adasyn_vgg.yaml",
                [
                    f"data.path={path}",
                    f"data.stream={str(stream).lower()}",
                    "data.group_column=record",
                    "resampling.sampler=balanced",
                ],
            )
            data = load(cfg)
            rows = np.arange(len(data.y))
            X = to_1d(data.X) if not stream else data.X[rows].map(to_1d)
            shares = balanced_proportions(data.y, {})
            ds = (
                make_dataset(X, data.y, 256, shuffle=True, proportions=shares, steps=steps)
                if not stream
                else streamed_batches(X, data.y, 256, proportions=shares, steps=steps, cache_bytes=cache)
            )
            model = build_model(cfg, 187)
            model.compile(keras.optimizers.Adam(1e-3), loss=make_loss())
            times: list[float] = []

            class Clock(keras.callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None):
                    self.t = time.perf_counter()

                def on_epoch_end(self, epoch, logs=None):
                    times.append(time.perf_counter() - self.t)

            model.fit(ds, epochs=2, verbose=0, callbacks=[Clock()])
            seconds[name].append(times[-1])
    return {name: steps * 256 / float(np.median(s)) for name, s in seconds.items()}


def main() -> None:
    """Write the shards, run, print the tables and the last line."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--beats",
        type=lambda v: sorted(int(n) for n in v.split(",")),
        default=[500_000, 3_000_000],
        help="beats of each streamed table, comma-separated (default 500000,3000000)",
    )
    parser.add_argument("--shards", type=int, default=40)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--fits", type=int, default=100_000, help="beats of the table that fits, for the speed pair")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fits = Path(tmp) / "fits"
        fits.mkdir()
        write_shards(fits, args.fits, 1, seed=1)
        rates = speed(fits / "part-000.parquet", args.steps)
        print(f"| `balanced` batches of {args.fits:,} beats (one file) | training samples/s | vs in memory |")
        print("|---|---|---|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:,.0f} | {rate / rates['in memory']:.2f}x |", flush=True)
        print()
        peaks = {n: _streamed_run(Path(tmp), n, args) for n in args.beats}
    small, large = min(peaks), max(peaks)
    if large > small:
        grew = (large - small) * 187 * 4 / 1e6
        kept = peaks[large] - peaks[small]
        print(
            f"peak RSS grew {kept:+.0f} MB for {grew:.0f} MB more data ({small:,} -> {large:,} beats): "
            f"{100 * kept / grew:.1f} % of the data's growth stays in memory"
        )


def _streamed_run(tmp: Path, beats: int, args: argparse.Namespace) -> float:
    """Write ``beats`` beats as shards, stream one run over them, print its line; its peak RSS in MB."""
    folder = tmp / f"shards-{beats}"
    folder.mkdir()
    started = time.perf_counter()
    write_shards(folder, beats, args.shards)
    written = time.perf_counter() - started
    wall, peak, metrics = run(folder, f"sqlite:///{tmp}/mlflow-{beats}.db", args.steps, stream=True)
    for part in folder.glob("*.parquet"):
        part.unlink()
    print(
        f"wrote {beats:,} beats in {args.shards} shards in {written:.0f} s; one streamed run (check every "
        f"value, {args.steps} training steps of 256, score validation and test): training "
        f"{metrics['training_seconds']:.0f} s, test macro-F1 {metrics['test_macro_f1']:.3f}"
    )
    print(f"streamed {beats} beats ({beats * 187 * 4 / 1e6:.0f} MB) in {wall:.0f} s, peak RSS {peak:.0f} MB", flush=True)
    return peak


if __name__ == "__main__":
    main()

"""Data-parallel overhead: the seed pipeline with ``--workers 1`` against ``--workers 2`` on this machine.

    python benchmarks/workers.py [--epochs 5]

Both train the same network for the same epochs (no early stopping) on the bundled sample, in a
throwaway MLflow store; the table gives each run's training time (as logged), its wall time and
its test macro-F1, and the all-reduce volume per training step that N workers exchange.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run both, print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    rows = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            uri = f"sqlite:///{tmp}/mlflow.db"
            sets = [
                f"training.epochs={args.epochs}",
                "training.early_stopping_patience=0",
                "training.reduce_lr_patience=0",
                "baseline=none",
                "tracking.gradcam_per_class=0",
            ]
            cmd = [
                sys.executable,
                "-m",
                "ecgvgg.cli.main",
                "run",
                str(ROOT / "pipelines" / "adasyn_vgg.yaml"),
                "--workers",
                str(workers),
                *[a for s in sets for a in ("--set", s)],
            ]
            started = time.perf_counter()
            done = subprocess.run(
                cmd, cwd=tmp, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if done.returncode not in (0, 3):  # 3: a collapse verdict, still a timed run
                sys.exit(done.returncode)
            wall = time.perf_counter() - started
            client = MlflowClient(uri)
            (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
            m = run.data.metrics
            rows.append((workers, m["training_seconds"], wall, m["test_macro_f1"], int(m["params_trainable"])))
    print("| workers | training s | wall s | test macro-F1 | all-reduce per step |")
    print("|---|---|---|---|---|")
    for workers, train_s, wall, f1, params in rows:
        volume = 4 * params * 2 * (workers - 1) / workers / 1e6  # ring all-reduce, float32 gradients, per worker
        print(f"| {workers} | {train_s:.1f} | {wall:.1f} | {f1:.3f} | {volume:.2f} MB sent per worker |")


if __name__ == "__main__":
    main()

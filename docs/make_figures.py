"""Make the README's pictures from a real run of the seed pipeline on the bundled sample.

    python docs/make_figures.py            # about a minute on a 2-core CPU

Runs ``ecgvgg run pipelines/adasyn_vgg.yaml`` against a throwaway MLflow store and copies the
run's training curves, its validation and test confusion matrices and its Grad-CAM pictures of
N, S and V beats to ``docs/img/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("training_curves.png", "val_confusion_matrix.png", "test_confusion_matrix.png",
           "explain/gradcam_N.png", "explain/gradcam_S.png", "explain/gradcam_V.png")


def main() -> None:
    """Run the seed pipeline and copy its figures."""
    from mlflow.tracking import MlflowClient

    out = ROOT / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        done = subprocess.run([sys.executable, "-m", "ecgvgg.cli.main", "run", str(ROOT / "pipelines" / "adasyn_vgg.yaml")],
                              cwd=tmp, env=env)
        if done.returncode not in (0, 3):
            sys.exit(done.returncode)
        client = MlflowClient(uri)
        (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
        for name in FIGURES:
            shutil.copy(client.download_artifacts(run.info.run_id, name, tmp), out / Path(name).name)
        print(f"copied {', '.join(FIGURES)} of run {run.info.run_name} to {out}")


if __name__ == "__main__":
    main()

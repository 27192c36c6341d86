"""The comparison table and picture of the shipped pipelines on the bundled sample (no ../shared needed).

    python benchmarks/compare.py            # about 6 minutes on a 2-core CPU

Runs ``ecgvgg run`` on the seed pipeline at widths 0.125, 0.25 and 0.5 and on its 2D variant
(``pipelines/adasyn_vgg2d.yaml``), one grouped split each, in a throwaway MLflow store; then
``ecgvgg runs`` writes the table (parameters, time, test macro-F1 with its 95% interval, and the
random forest scored on the same test beats) and ``--plot`` the picture, to
``benchmarks/results/compare.md`` and ``docs/img/compare.png``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = (
    ("vgg16-1d-w0.125", "adasyn_vgg.yaml", ["model.width=0.125"]),
    ("vgg16-1d-w0.25", "adasyn_vgg.yaml", []),
    ("vgg16-1d-w0.5", "adasyn_vgg.yaml", ["model.width=0.5"]),
    ("vgg16-2d-fold", "adasyn_vgg2d.yaml", []),
)


def main() -> None:
    """Run each pipeline, then write the runs table and picture."""
    results, picture = ROOT / "benchmarks" / "results" / "compare.md", ROOT / "docs" / "img" / "compare.png"
    results.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        ecgvgg = [sys.executable, "-m", "ecgvgg.cli.main"]
        for name, pipeline, sets in RUNS:
            args = [a for s in [*sets, "tracking.experiment=compare", f"tracking.run_name={name}"] for a in ("--set", s)]
            done = subprocess.run(
                [*ecgvgg, "run", str(ROOT / "pipelines" / pipeline), *args], cwd=tmp, env=env, stdout=subprocess.DEVNULL
            )
            if done.returncode not in (0, 3):
                sys.exit(done.returncode)
        table = Path(tmp) / "compare.md"
        subprocess.run(
            [*ecgvgg, "runs", "--experiment", "compare", "--sort", "params_total", "-o", str(table), "--plot", str(picture)],
            cwd=tmp,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        text = table.read_text()
    results.write_text(text)
    print(text, end="")
    print(f"wrote {results} and {picture}")


if __name__ == "__main__":
    main()

"""Time and peak memory of split_then_oversample at MIT-BIH scale (87,554 x 187 float32).

    python benchmarks/resampling_scale.py [--samplers adasyn smote random none]

Each sampler runs in a fresh process so that peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def measure(sampler: str) -> dict:
    from _synthetic import synthetic_beats

    from ecgvgg.core.folds import split_then_oversample

    import imblearn.over_sampling  # noqa: F401 - import time is not resampling time
    import sklearn.model_selection  # noqa: F401

    X, y = synthetic_beats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    s = split_then_oversample(X, y, sampler=sampler, seed=0)
    seconds = time.perf_counter() - t0  # timed without tracemalloc, which slows allocations
    del s
    tracemalloc.start()
    s = split_then_oversample(X, y, sampler=sampler, seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "sampler": sampler,
        "rows": len(X),
        "seconds": round(seconds, 2),
        "peak_traced_mb": round(peak / 2**20, 1),
        "input_mb": round(X.nbytes / 2**20, 1),
        "train_after_rows": int(len(s.X_train)),
        "train_after_mb": round(s.X_train.nbytes / 2**20, 1),
        "dtype": str(s.X_train.dtype),
        "rss_before_mb": round(rss_before),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", nargs="+", default=["adasyn", "smote", "random", "none"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    rows = [
        json.loads(
            subprocess.run([sys.executable, __file__, "--one", s], check=True, capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        for s in args.samplers
    ]
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    print("\n".join(lines))
    out = Path(__file__).parent / "results" / "resampling_scale.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Record adaptation measured paired: each fold's network scored as trained and adapted to each test record.

    python benchmarks/interpatient_adaptation.py --lever one_lead --weights 0.5 1
    python benchmarks/interpatient_posthoc.py --lever one_lead --consensus 0.6 --cache /tmp/ecgvgg_interpatient/adapt0.5

Trains a lever's network fold by fold as ``benchmarks/interpatient.py`` does (same folds, seed and
configuration; with ``record_adaptation``, so that each run keeps its training rows' reference
statistics), then scores each fold's test records as trained and with ``record_adaptation`` of each
weight (:func:`ecgvgg.core.adaptation.record_adapted`). Prints SVEB / VEB F1 and N Se per fold
and pooled, and saves each set of probabilities as ``<cache>/<plain|adaptW>/<lever>_<estimate>_probs.npz``
beside links to the cached tables, so that ``interpatient_posthoc.py --cache <cache>/adaptW`` blends
the same networks with their refitted trees and scores record consensus on top.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from interpatient import aami_row, add_lever_arguments, add_set_argument, estimate_data, folds_of


def scored(lever: str, estimate: str, args: argparse.Namespace) -> dict[str, list[np.ndarray]]:
    """One estimate's folds: labels, the run's tree predictions and the network's probabilities, plain and adapted."""
    from ecgvgg.core.adaptation import record_adapted
    from ecgvgg.core.config import override
    from ecgvgg.core.study import run_fold

    cfg, data, n_main = estimate_data(lever, estimate, args, args.sets)
    # the run keeps its reference statistics in its contract (record adaptation needs one split per run)
    first, *others = args.weights
    cfg = override(cfg, {"split.seed": args.seed, "training.seed": args.seed, "split.folds": None, "record_adaptation": first})
    if cfg.baseline_blend or cfg.record_consensus:
        raise SystemExit(f"{lever} blends its tree or answers with record consensus: choose a network alone (one_lead)")
    out: dict[str, list[np.ndarray]] = {"y": [], "base": [], "plain": [], **{f"adapt{w:g}": [] for w in args.weights}}
    for k, fold in enumerate(folds_of(estimate, data, n_main, args.folds, args.seed, cfg.split.val_size), start=1):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = run_fold(cfg, data, fold)
        reference = run.contract.adaptation["reference"]
        rows, records, y = run.contract.shape(data.X[fold.test]), data.named_groups(fold.test), data.y[fold.test]
        out["y"].append(y)
        out["base"].append(run.baseline_pred)
        out["plain"].append(run.model.predict(rows, batch_size=1024, verbose=0))
        out[f"adapt{first:g}"].append(run.probs)  # the run's own test answers
        for w in others:
            out[f"adapt{w:g}"].append(record_adapted(run.model, rows, records, reference, w))
        line = f"{lever} {estimate} fold {k}: as trained {_f1s(y, out['plain'][-1])}"
        for w in args.weights:
            line += f" | adapted {w:g} {_f1s(y, out[f'adapt{w:g}'][-1])}"
        print(f"{line} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return out


def _f1s(y: np.ndarray, probs: np.ndarray) -> str:
    """SVEB F1, VEB F1 and N Se of the probabilities' classes."""
    a = aami_row(y, probs.argmax(axis=1))
    return f"SVEB F1 {a['sveb_f1']:.3f} VEB F1 {a['veb_f1']:.3f} N Se {a['n_se']:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Train, score plain and adapted, print the pooled rows and save the probabilities."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_lever_arguments(p, "one_lead")
    p.add_argument("--weights", nargs="+", type=float, default=[0.5])
    p.add_argument("--seed", type=int, default=0)
    add_set_argument(p, "override the lever's configuration (repeatable)")
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    lines = ["| scored | estimate | SVEB Se / +P / F1 | VEB Se / +P / F1 | N Se |", "|---|---|---|---|---|"]
    for estimate in args.estimates:
        out = scored(args.lever, estimate, args)
        y = np.concatenate(out["y"])
        for name in [k for k in out if k not in ("y", "base")]:
            folder = args.cache / name
            folder.mkdir(exist_ok=True)
            for table in args.cache.glob("*.parquet"):
                if not (folder / table.name).exists():
                    (folder / table.name).symlink_to(table.resolve())
            probs = np.concatenate(out[name])
            np.savez_compressed(
                folder / f"{args.lever}_{estimate}_probs.npz",
                y=y,
                probs=probs,
                base=np.concatenate(out["base"]),
                seeds=np.asarray([args.seed]),
            )
            a = aami_row(y, probs.argmax(axis=1))
            lines.append(
                f"| {name} | {estimate} | {a['sveb_se']:.3f} / {a['sveb_ppv']:.3f} / **{a['sveb_f1']:.3f}** | "
                f"{a['veb_se']:.3f} / {a['veb_ppv']:.3f} / **{a['veb_f1']:.3f}** | {a['n_se']:.3f} |"
            )
            print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What changing a trained lever's decisions would do: its network blended with the boosted tree, or shifted.

    python benchmarks/interpatient.py --levers one_lead --estimates ds1_svdb svdb_ds1   # first: saves the probabilities
    python benchmarks/interpatient_posthoc.py --lever one_lead --estimates ds1_svdb svdb_ds1

For each estimate, reads the network's test probabilities that ``benchmarks/interpatient.py`` saved
(``<cache>/<lever>_<estimate>_probs.npz``), fits the run's gradient-boosted tree again on the same
training rows (same folds, same seed, same per-class cap and class weights as a run; ``--set`` changes
them) and reports, pooled over the folds:

* ``blend w``: the class with the highest ``(1 - w) x network + w x tree`` probability (w = 0 is the
  network as trained, w = 1 the tree);
* ``shift a``: the network's log-probabilities plus ``a x log(class share of the training rows)``,
  on top of any ``training.prior_shift`` the lever trained with (what a stronger shift would do).
* with ``--consensus w``: ``blend 0.5`` (as the shipped pipeline answers) and the tree alone, each after
  record consensus of weight ``w`` (``record_consensus``: each test record's beats of one shape and
  rhythm move their probabilities towards their cluster's mean). For a lever that blends its tree
  already (``shipped``, run with ``--set record_consensus=0``), only its answers as run and after
  consensus.

Nothing is trained but the trees; prints a Markdown table and writes it under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

import numpy as np

from interpatient import (
    NAMES,
    ROOT,
    aami_row,
    add_lever_arguments,
    add_set_argument,
    estimate_data,
    folds_of,
    missing_probabilities,
)

BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)
SHIFTS = (0.1, 0.3, 0.5)


def tree_probabilities(
    lever: str, estimate: str, args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, Any]:
    """The saved probabilities, the refitted trees' probabilities (None for a lever that blends its tree already:
    only ``--consensus`` is scored), the training class counts and a function that applies record consensus of a
    given weight to test probabilities (as the run would)."""
    from ecgvgg.core.baselines import class_probabilities
    from ecgvgg.core.config import override
    from ecgvgg.core.study import fit_baseline

    saved = np.load(args.cache / f"{lever}_{estimate}_probs.npz")
    if "seeds" not in saved or len(saved["seeds"]) != 1:
        raise SystemExit(f"{lever}_{estimate}_probs.npz does not name one seed: run interpatient.py again with one --seeds")
    seed = int(saved["seeds"][0])
    cfg, data, n_main = estimate_data(lever, estimate, args, args.sets)
    blended = bool(cfg.baseline_blend)
    if blended and not args.consensus:
        raise SystemExit(f"{lever} blends its tree already (baseline_blend {cfg.baseline_blend:g}): choose a network alone")
    if cfg.record_consensus:
        raise SystemExit(f"{lever} answers with record consensus already: pass --set record_consensus=0, as its run must")
    cfg = override(cfg, {"split.seed": seed, "training.seed": seed})  # as interpatient.py's run_fold trains
    trees, counts, tests = [], np.zeros(len(NAMES)), []
    for fold in folds_of(estimate, data, n_main, args.folds, seed, cfg.split.val_size):
        tests.append(fold.test)
        counts += np.bincount(data.y[fold.train], minlength=len(NAMES))
        if blended:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = fit_baseline(cfg, data, fold.train)  # the run's own: lever_config asks for baseline hgb
        trees.append(class_probabilities(tree, data.rows(fold.test), range(len(NAMES))))
    test = np.concatenate(tests)
    if len(test) != len(saved["y"]) or (data.y[test] != saved["y"]).any():
        raise SystemExit(f"{lever}_{estimate}_probs.npz does not hold these folds' test rows")
    tree_probs = np.concatenate(trees) if trees else None
    if tree_probs is not None:
        agree = float((tree_probs.argmax(axis=1) == saved["base"]).mean())
        say = f"{lever} {estimate} (seed {seed}): refitted trees agree with the run's on {agree:.3f} of the beats"
        print(say, file=sys.stderr)

    def consensus(probs: np.ndarray, weight: float) -> np.ndarray:
        from ecgvgg.core.contract import contract_for

        contract = contract_for(override(cfg, {"record_consensus": weight}), data.features)  # as a run's model answers
        rows, groups = data.rows(test), data.named_groups(test)
        started = time.perf_counter()
        out = contract.with_consensus(probs, rows, groups)
        seconds, records = time.perf_counter() - started, len(set(groups.tolist()))
        print(f"record consensus: {len(test)} beats of {records} records in {seconds:.1f} s", file=sys.stderr)
        return out

    return saved["probs"], tree_probs, counts, consensus


def row(label: str, estimate: str, y: np.ndarray, pred: np.ndarray) -> str:
    """One Markdown row of SVEB / VEB Se, +P, F1 and N Se."""
    a = aami_row(y, pred)
    return (
        f"| {label} | {estimate} | {a['sveb_se']:.3f} / {a['sveb_ppv']:.3f} / **{a['sveb_f1']:.3f}** | "
        f"{a['veb_se']:.3f} / {a['veb_ppv']:.3f} / **{a['veb_f1']:.3f}** | {a['n_se']:.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Blend and shift one lever's saved probabilities; print and write the Markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_lever_arguments(p, "one_lead")
    p.add_argument("--out", default="interpatient_posthoc")
    p.add_argument("--consensus", type=float, default=0.0, help="also score record consensus of this weight (0: not)")
    add_set_argument(p, "override the configuration the trees are fitted with (repeatable), e.g. baseline_class_weight=training")
    args = p.parse_args(argv)
    why = missing_probabilities(args)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    lines = [
        "| decision | estimate | SVEB Se / +P / F1 | VEB Se / +P / F1 | N Se |",
        "|---|---|---|---|---|",
    ]
    for estimate in args.estimates:
        net, tree, counts, consensus = tree_probabilities(args.lever, estimate, args)
        y = np.load(args.cache / f"{args.lever}_{estimate}_probs.npz")["y"]
        if tree is None:  # the run's own answers, its tree blended in
            w = args.consensus
            lines += [row("as run", estimate, y, net.argmax(axis=1))]
            lines += [row(f"as run + consensus {w:g}", estimate, y, consensus(net, w).argmax(axis=1))]
            print("\n".join(lines[-2:]), flush=True)
            continue
        for w in BLENDS:
            lines.append(row(f"blend {w:g}", estimate, y, ((1 - w) * net + w * tree).argmax(axis=1)))
        shares = np.log(np.maximum(counts / counts.sum(), 1e-4))
        for a in SHIFTS:
            lines.append(row(f"shift +{a:g}", estimate, y, (np.log(np.maximum(net, 1e-12)) + a * shares).argmax(axis=1)))
        if args.consensus:
            w = args.consensus
            lines.append(row(f"blend 0.5 + consensus {w:g}", estimate, y, consensus(0.5 * net + 0.5 * tree, w).argmax(axis=1)))
            lines.append(row(f"tree + consensus {w:g}", estimate, y, consensus(tree, w).argmax(axis=1)))
        print("\n".join(lines[-len(BLENDS) - len(SHIFTS) - 2 * bool(args.consensus) :]), flush=True)
    out = ROOT / "benchmarks" / "results" / f"{args.out}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

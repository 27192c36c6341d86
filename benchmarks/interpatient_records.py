"""Where a trained lever's errors come from: its false and missed SVEB / VEB calls, record by record.

    python benchmarks/interpatient.py --levers shipped        # first: saves the probabilities
    python benchmarks/interpatient_records.py --lever shipped --top 8

For each estimate, reads the test probabilities that ``benchmarks/interpatient.py`` saved
(``<cache>/<lever>_<estimate>_probs.npz``, the lever's answers as run), finds each test beat's record
again (same folds, same seed) and prints, for the records with the most false SVEB calls and those with
the most false VEB calls: the record's beats, its SVEB and VEB beats, how many of each were found, the
false calls of each, the normal beats called something else, and the record's RR irregularity (the
median absolute change between successive RR intervals over the median RR interval: about 0.02 in
sinus rhythm, 0.1 and more in atrial fibrillation, where MIT-BIH labels every beat normal, however early).

Nothing is trained; writes the whole per-record table as CSV under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from interpatient import (
    LEVERS,
    ROOT,
    add_lever_arguments,
    add_set_argument,
    estimate_data,
    folds_of,
    lever_pipeline,
    missing_probabilities,
    prepare_options,
    table,
)


def irregularity(lever: str, args: argparse.Namespace) -> pd.Series:
    """Each record's median absolute change between successive RR intervals over its median RR interval."""
    options = prepare_options(LEVERS[lever][0] or None, lever_pipeline(lever))
    paths = [table(args.records, args.cache, "ds1", options), table(args.svdb, args.cache, "svdb", options)]
    t = pd.concat([pd.read_parquet(path, columns=["record", "rr_pre"]) for path in paths])
    t["record"] = t["record"].astype(str)

    def one(rr: pd.Series) -> float:
        rr = rr.to_numpy()
        return float(np.median(np.abs(np.diff(rr))) / np.median(rr)) if len(rr) > 1 else 0.0

    return t.groupby("record", sort=False)["rr_pre"].apply(one)


def record_errors(lever: str, estimate: str, args: argparse.Namespace, irregular: pd.Series) -> pd.DataFrame:
    """One estimate's test beats counted by record: SVEB / VEB beats, found, false calls and missed normal beats."""
    saved = np.load(args.cache / f"{lever}_{estimate}_probs.npz")
    seed = int(saved["seeds"][0])
    cfg, data, n_main = estimate_data(lever, estimate, args, args.sets)
    test = np.concatenate([f.test for f in folds_of(estimate, data, n_main, args.folds, seed, cfg.split.val_size)])
    if len(test) != len(saved["y"]) or (data.y[test] != saved["y"]).any():
        raise SystemExit(f"{lever}_{estimate}_probs.npz does not hold these folds' test rows")
    y, pred = saved["y"], saved["probs"].argmax(axis=1)
    beats = pd.DataFrame({"record": data.named_groups(test).astype(str), "y": y, "pred": pred})
    out = beats.groupby("record").apply(
        lambda b: pd.Series(
            {
                "beats": len(b),
                "sveb": int((b.y == 1).sum()),
                "sveb_found": int(((b.y == 1) & (b.pred == 1)).sum()),
                "sveb_false": int(((b.y != 1) & (b.pred == 1)).sum()),
                "veb": int((b.y == 2).sum()),
                "veb_found": int(((b.y == 2) & (b.pred == 2)).sum()),
                "veb_false": int(((b.y != 2) & (b.pred == 2)).sum()),
                "n_missed": int(((b.y == 0) & (b.pred != 0)).sum()),
            }
        ),
        include_groups=False,
    )
    out["rr_irregularity"] = irregular.reindex(out.index).round(3)
    return out.assign(lever=lever, estimate=estimate, seed=seed).reset_index()


def markdown(errors: pd.DataFrame, by: str, top: int) -> list[str]:
    """The ``top`` records with the most ``by`` (sveb_false or veb_false) of one estimate, as Markdown rows."""
    worst = errors.sort_values(by, ascending=False).head(top)
    total = int(errors[by].sum())
    return [
        f"| {r.estimate} | {by} | {r.record} | {r.beats} | {r.sveb_found}/{r.sveb} | {r.sveb_false} | "
        f"{r.veb_found}/{r.veb} | {r.veb_false} | {r.n_missed} | {r.rr_irregularity:.3f} | "
        f"{r[by] / max(total, 1):.2f} |"
        for _, r in worst.iterrows()
    ]


def main(argv: list[str] | None = None) -> int:
    """Count one lever's errors by record; print the worst records and write the CSV."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_lever_arguments(p, "shipped")
    p.add_argument("--top", type=int, default=5, help="records shown per estimate and kind of false call")
    p.add_argument("--out", default=None, help="CSV name under benchmarks/results/ (default: interpatient_records_LEVER)")
    add_set_argument(p, "override the configuration the lever ran with (repeatable), as interpatient.py was given")
    args = p.parse_args(argv)
    why = missing_probabilities(args)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    lines = [
        "| estimate | worst by | record | beats | SVEB found | SVEB false | VEB found | VEB false | N missed "
        "| RR irregularity | share of the false calls |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    frames, irregular = [], irregularity(args.lever, args)
    for estimate in args.estimates:
        errors = record_errors(args.lever, estimate, args, irregular)
        frames.append(errors)
        lines += markdown(errors, "sveb_false", args.top) + markdown(errors, "veb_false", args.top)
    out = ROOT / "benchmarks" / "results" / f"{args.out or 'interpatient_records_' + args.lever}.csv"
    pd.concat(frames).to_csv(out, index=False)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

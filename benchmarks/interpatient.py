"""Inter-patient levers, each measured three ways without DS2, the network against the boosted tree.

    python benchmarks/interpatient.py                           # every lever, the three estimates
    python benchmarks/interpatient.py --levers shipped reference --estimates cv
    python benchmarks/interpatient.py --levers causal --shift 0.2     # also as prior_shift 0.2 would make it
    python benchmarks/interpatient.py --levers shipped --set training.epochs=8

The three estimates of a lever (choose by all three: DS1 cross-validation alone ranks models
differently from DS2):

* ``cv``: record-grouped 5-fold cross-validation inside MIT-BIH DS1 (no record in two parts), the
  MIT-BIH Supraventricular Arrhythmia Database (SVDB) added to every fold's training part, as
  pipelines/interpatient_vgg.yaml adds it, never to validation or test;
* ``ds1_svdb``: trained on all of DS1 (validation carved by record), tested on all of SVDB;
* ``svdb_ds1``: trained on SVDB, tested on DS1.

Every fold trains ecgvgg's own network (:func:`ecgvgg.core.study.run_fold`, pipelines/interpatient_cv.yaml
with the lever's overrides) and, on the same training rows, the run's gradient-boosted baseline
(``baseline: hgb``), so the two are paired fold by fold. The beats are cut from the WFDB records
with ``prepare``'s own code and the lever's ``prepare`` options. SVEB / VEB Se, +P and F1, N Se
and F +P are from the predictions pooled over the folds. Prints a Markdown table and writes it,
with the per-fold CSV, under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NAMES = ["N", "S", "V", "F", "Q"]
CV_PIPELINE = ROOT / "pipelines" / "interpatient_cv.yaml"
SHIPPED = ROOT / "pipelines" / "interpatient_vgg.yaml"
#: The levers that are a pipeline as shipped, with its own ``# prepare-options:`` line (the others: CV_PIPELINE).
PIPELINES = {
    "shipped": SHIPPED,
    "pretrained": ROOT / "pipelines" / "pretrained_vgg.yaml",
    "bandpass": SHIPPED,
    "scale_record": SHIPPED,
}
#: The P-wave window with each record's median beat (each lever names its leads).
REFERENCE = "--method window --before 0.25 --after 0.4 --scale window --reference record"
#: The levers measured before the record head existed keep it off.
NO_HEAD = "training.subject_adversary=0"
#: Each lever: the ``prepare`` options of its tables and its overrides of pipelines/interpatient_cv.yaml.
LEVERS: dict[str, tuple[str, list[str]]] = {
    "rhythm": ("--method kachuee", ["data.channels=[]", "training.class_weight=balanced", "training.prior_shift=0", NO_HEAD]),
    "reference": (
        f"{REFERENCE} --leads MLII",
        ["data.channels=[x,ref]", "training.class_weight=balanced", "training.prior_shift=0", NO_HEAD],
    ),
    "two_leads": (
        f"{REFERENCE} --leads MLII,V1",
        ["data.channels=[x,x2_,ref,ref2_]", "training.class_weight=balanced", "training.prior_shift=0", NO_HEAD],
    ),
    "records_weight": (
        f"{REFERENCE} --leads MLII,V1",
        ["data.channels=[x,x2_,ref,ref2_]", "training.class_weight=records", "training.prior_shift=0", NO_HEAD],
    ),
    "causal": (
        f"{REFERENCE.replace('record', 'causal')} --leads MLII,V1",
        ["data.channels=[x,x2_,ref,ref2_]", "training.class_weight=records", "training.prior_shift=0", NO_HEAD],
    ),
    # records_weight with training.prior_shift 0.2, validated on 15 % of the records as the shipped pipeline is
    "prior_shift": (
        f"{REFERENCE} --leads MLII,V1",
        ["data.channels=[x,x2_,ref,ref2_]", NO_HEAD, "split.val_size=0.15"],
    ),
    # prior_shift with a record head behind gradient reversal (training.subject_adversary 0.1), on two leads
    "network": (f"{REFERENCE} --leads MLII,V1", ["data.channels=[x,x2_,ref,ref2_]", "split.val_size=0.15"]),
    # the same network on one lead (MLII or its stand-in, and its reference): pipelines/interpatient_vgg.yaml's
    # network alone; the saved probabilities of network and one_lead are what interpatient_posthoc.py blends
    "one_lead": (f"{REFERENCE} --leads MLII", ["data.channels=[x,ref]", "split.val_size=0.15"]),
    # pipelines/interpatient_vgg.yaml as shipped: one_lead blended with its boosted tree (baseline_blend 0.5)
    "shipped": ("", []),
    # pipelines/pretrained_vgg.yaml, the packaged model: the shipped recipe with the causal reference (no later beat),
    # validated on 15 % of the records as the other levers are
    "pretrained": ("", ["split.val_size=0.15"]),
    # the shipped pipeline on records filtered 0.5-40 Hz before cutting (`prepare --bandpass 0.5,40`): no baseline
    # wander, mains hum or muscle noise, whose share differs between databases and patients
    "bandpass": ("+ --bandpass 0.5,40", []),
    # the shipped pipeline with each record divided by its median R-peak height (`prepare --scale record`) instead of
    # each 10 s scaled to [0, 1], so that a large ectopic beat does not shrink its neighbours and their reference
    "scale_record": ("+ --scale record", []),
}
ESTIMATES = ("cv", "ds1_svdb", "svdb_ds1")


def prepare_options(line: str | None = None, pipeline: Path = SHIPPED) -> dict:
    """``prepare_records`` keyword arguments from ``prepare`` options such as ``--method window --leads MLII,V1``
    (default: the pipeline's ``# prepare-options:`` line; a line starting with ``+`` adds to that line)."""
    if line is None or line.startswith("+"):
        own = next(ln for ln in pipeline.read_text().splitlines() if ln.startswith("# prepare-options:"))
        line = own.split(":", 1)[1] + (line or "+")[1:]
    args = shlex.split(line)
    opts = dict(zip(args[::2], args[1::2]))
    out: dict = {"method": opts.get("--method", "kachuee")}
    for key in ("before", "after", "rate", "reference-window"):
        if f"--{key}" in opts:
            out[key.replace("-", "_")] = float(opts[f"--{key}"])
    for key in ("scale", "reference", "channel"):
        if f"--{key}" in opts:
            out[key] = opts[f"--{key}"]
    if "--leads" in opts:
        out["leads"] = opts["--leads"].split(",")
    if "--bandpass" in opts:
        out["filter_band"] = tuple(float(v) for v in opts["--bandpass"].split(","))
    return out


def lever_pipeline(lever: str) -> Path:
    """The pipeline a lever overrides: its own for a shipped pipeline, else pipelines/interpatient_cv.yaml."""
    return PIPELINES.get(lever, CV_PIPELINE)


def table(records: Path, cache: Path, name: str, options: dict) -> Path:
    """``prepare`` a folder of records into a cached Parquet file named after the options."""
    from ecgvgg.core.records import prepare_records

    tag = re.sub(r"[^A-Za-z0-9.]+", "-", "_".join(f"{k}{v}" for k, v in sorted(options.items())))
    path = cache / f"{name}_{tag}.parquet"
    if not path.exists():
        beats, report = prepare_records(records, **options)
        beats.to_parquet(path, index=False)
        print(f"{path.name}: {report.summary()}", file=sys.stderr)
    return path


def lever_config(lever: str, main: Path, extra: Path, sets: list[str]):
    """The lever's pipeline (:func:`lever_pipeline`) with its overrides, on ``main`` with ``extra`` as training-only
    rows, scored against the boosted tree."""
    from ecgvgg.core.config import load_config

    pipeline = lever_pipeline(lever)
    overrides = [
        *LEVERS[lever][1],
        *sets,
        f"data.path={main}",
        f"data.extra_train=[{extra}]",
        "baseline=hgb",
        "split.folds=null",
        "split.protocol=stratified",
        "tracking.gradcam_per_class=0",
    ]
    return load_config(pipeline, overrides)


def run_fold(cfg, data, fold, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's and the baseline's predictions of one fold's test rows, and the network's probabilities."""
    from ecgvgg.core.config import override
    from ecgvgg.core.study import run_fold as study_fold

    cfg = override(cfg, {"split.seed": seed, "training.seed": seed})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = study_fold(cfg, data, fold)
    return out.pred, out.baseline_pred, out.probs


def folds_of(estimate: str, data, n_main: int, folds: int, seed: int, val_size: float) -> list:
    """The folds of one estimate: grouped CV of the ``n_main`` first rows (the others only train), or
    those rows against all the others."""
    from ecgvgg.core.folds import Fold, cv_folds, split_indices

    groups = data.groups.astype(str)
    if estimate == "cv":
        tagged = np.r_[groups[:n_main], np.full(len(groups) - n_main, "extra")]
        return [
            Fold(*f)
            for f in cv_folds(
                data.y, folds=folds, groups=tagged, val_size=val_size, seed=seed, classes=range(5), train_only=data.train_only
            )
        ]
    source = np.arange(len(groups)) < n_main
    tagged = np.char.add(np.where(source, "source:", "target:"), groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            split_indices(
                data.y,
                groups=tagged,
                val_size=val_size,
                seed=seed,
                classes=range(5),
                test_groups=sorted(set(tagged[~source])),
                train_groups=sorted(set(tagged[source])),
            )
        ]


def aami_row(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """SVEB / VEB Se, +P and F1, N Se and F +P of one set of predictions."""
    from ecgvgg.core.metrics import aami_scores, confusion

    a = aami_scores(confusion(y, pred, range(5)), NAMES)
    out = {
        f"{beat}_{key}": a[c][measure]
        for c, beat in (("S", "sveb"), ("V", "veb"))
        for measure, key in (("Se", "se"), ("+P", "ppv"), ("F1", "f1"))
    }
    return {**out, "n_se": a["N"]["Se"], "f_ppv": a["F"]["+P"]}


def estimate_data(lever: str, estimate: str, args: argparse.Namespace, sets: list[str]) -> tuple:
    """One lever's configuration and its tables for one estimate: ``(cfg, data, n_main)``, the first ``n_main`` rows
    being the database that cross-validation splits (or that trains, across databases)."""
    from ecgvgg.core.dataset import load

    options = prepare_options(LEVERS[lever][0] or None, lever_pipeline(lever))
    ds1 = table(args.records, args.cache, "ds1", options)
    svdb = table(args.svdb, args.cache, "svdb", options)
    main, extra = (svdb, ds1) if estimate == "svdb_ds1" else (ds1, svdb)
    cfg = lever_config(lever, main, extra, sets)
    data = load(cfg)
    n_main = data.scored
    if estimate != "cv":  # the other database is the test part here, not extra training
        data.train_only = 0
    return cfg, data, n_main


def measure(lever: str, estimate: str, args: argparse.Namespace) -> list[dict]:
    """Every fold of one lever's estimate: pooled network and baseline scores, and the minutes taken."""
    cfg, data, n_main = estimate_data(lever, estimate, args, args.sets)
    started, rows = time.perf_counter(), []
    for seed in args.seeds:
        for k, fold in enumerate(folds_of(estimate, data, n_main, args.folds, seed, cfg.split.val_size), start=1):
            t0 = time.perf_counter()
            pred, base, probs = run_fold(cfg, data, fold, seed)
            y = data.y[fold.test]
            rows.append(
                {
                    "lever": lever,
                    "estimate": estimate,
                    "seed": seed,
                    "fold": k,
                    "test": fold.test,
                    "pred": pred,
                    "base": base,
                    "probs": probs,
                    "seconds": time.perf_counter() - t0,
                    "train_counts": np.bincount(data.y[fold.train], minlength=len(NAMES)),
                    **aami_row(y, pred),
                    **{f"hgb_{k2}": v for k2, v in aami_row(y, base).items()},
                }
            )
            print(
                f"{lever} {estimate} seed {seed} fold {k}: SVEB F1 {rows[-1]['sveb_f1']:.3f} "
                f"(tree {rows[-1]['hgb_sveb_f1']:.3f}), VEB F1 {rows[-1]['veb_f1']:.3f} "
                f"(tree {rows[-1]['hgb_veb_f1']:.3f}), N Se {rows[-1]['n_se']:.3f} "
                f"({rows[-1]['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    y_all = data.y
    for r in rows:
        r["y"] = y_all[r["test"]]
    np.savez_compressed(
        args.cache / f"{lever}_{estimate}_probs.npz",
        y=np.concatenate([r["y"] for r in rows]),
        probs=np.concatenate([r["probs"] for r in rows]),
        base=np.concatenate([r["base"] for r in rows]),
        seeds=np.asarray(args.seeds),
    )
    for r in rows:
        r["minutes"] = (time.perf_counter() - started) / 60
    return rows


def shifted(rows: list[dict], alpha: float) -> list[dict]:
    """The rows as ``training.prior_shift: alpha`` would have made them: each fold's probabilities weighed by its
    training rows' class shares to the power ``alpha`` (what the shift does to a trained network)."""
    out = []
    for r in rows:
        shares = np.maximum(r["train_counts"] / r["train_counts"].sum(), 1e-4)
        pred = np.argmax(np.log(np.maximum(r["probs"], 1e-12)) + alpha * np.log(shares), axis=1)
        out.append(
            {
                **r,
                "lever": f"{r['lever']} + prior_shift {alpha:g}",
                "pred": pred,
                **aami_row(r["y"], pred),
                **{f"hgb_{k}": v for k, v in aami_row(r["y"], r["base"]).items()},
            }
        )
    return out


def summary_line(rows: list[dict]) -> str:
    """One Markdown row: pooled scores of the network and the tree, the tree's SVEB/VEB F1 paired by fold."""
    y = np.concatenate([r["y"] for r in rows])
    net = aami_row(y, np.concatenate([r["pred"] for r in rows]))
    tree = aami_row(y, np.concatenate([r["base"] for r in rows]))
    ahead = sum(r["sveb_f1"] > r["hgb_sveb_f1"] for r in rows), sum(r["veb_f1"] > r["hgb_veb_f1"] for r in rows)
    r0 = rows[0]
    return (
        f"| {r0['lever']} | {r0['estimate']} | {net['sveb_se']:.3f} / {net['sveb_ppv']:.3f} / "
        f"**{net['sveb_f1']:.3f}** | {net['veb_se']:.3f} / {net['veb_ppv']:.3f} / **{net['veb_f1']:.3f}** | "
        f"{net['n_se']:.3f} | {net['f_ppv']:.3f} | {tree['sveb_f1']:.3f} | {tree['veb_f1']:.3f} | "
        f"{tree['n_se']:.3f} | {ahead[0]}/{ahead[1]} of {len(rows)} | {r0['minutes']:.1f} |"
    )


HEAD = (
    "| lever | estimate | network SVEB Se / +P / F1 | network VEB Se / +P / F1 | N Se | F +P | tree SVEB F1 "
    "| tree VEB F1 | tree N Se | folds network ahead (SVEB/VEB) | minutes |"
)


def add_lever_arguments(parser: argparse.ArgumentParser, lever: str) -> None:
    """The options of a script about one lever's runs: the record folders, the lever (default ``lever``), its
    estimates, the folds and the cache of tables and saved probabilities."""
    parser.add_argument("--records", type=Path, default=SHARED / "mitdb_ds1")
    parser.add_argument("--svdb", type=Path, default=SHARED / "svdb")
    parser.add_argument("--lever", choices=list(LEVERS), default=lever)
    parser.add_argument("--estimates", nargs="+", choices=ESTIMATES, default=list(ESTIMATES))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ecgvgg_interpatient"))


def missing_probabilities(args: argparse.Namespace) -> str | None:
    """Why the lever's saved probabilities cannot be read (None when every estimate has them)."""
    missing = [e for e in args.estimates if not (args.cache / f"{args.lever}_{e}_probs.npz").is_file()]
    if not missing:
        return None
    return f"no saved probabilities of {args.lever} for {', '.join(missing)}: run interpatient.py first"


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option (``args.sets``): configuration overrides."""
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=help)


def main(argv: list[str] | None = None) -> int:
    """Measure the levers, print the Markdown table and write it with the per-fold CSV."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=Path, default=SHARED / "mitdb_ds1")
    p.add_argument("--svdb", type=Path, default=SHARED / "svdb")
    p.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS))
    p.add_argument("--estimates", nargs="+", choices=ESTIMATES, default=list(ESTIMATES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--cache", type=Path, default=Path("/tmp/ecgvgg_interpatient"))
    p.add_argument("--out", default="interpatient_levers")
    p.add_argument(
        "--shift",
        type=float,
        default=None,
        metavar="ALPHA",
        help="also report each lever with its probabilities shifted to the class shares (prior_shift)",
    )
    add_set_argument(p, "override every lever's configuration (repeatable)")
    args = p.parse_args(argv)
    for folder in (args.records, args.svdb):
        if not folder.is_dir():
            print(f"error: {folder}: no such folder of WFDB records", file=sys.stderr)
            return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    lines, folds = [HEAD, "|---" * (HEAD.count("|") - 1) + "|"], []
    for lever in args.levers:
        for estimate in args.estimates:
            rows = measure(lever, estimate, args)
            folds += rows
            lines.append(summary_line(rows))
            print(lines[-1], flush=True)
            if args.shift:
                lines.append(summary_line(shifted(rows, args.shift)))
                print(lines[-1], flush=True)
            (out / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    drop = ("test", "pred", "base", "probs", "y", "train_counts")
    pd.DataFrame([{k: v for k, v in r.items() if k not in drop} for r in folds]).to_csv(
        out / f"{args.out}_folds.csv", index=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

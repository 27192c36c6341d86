"""Inter-patient benchmark: leave-records-out cross-validation inside MIT-BIH DS1, AAMI EC57 per row.

    python benchmarks/interpatient.py                       # the README table: 5 folds by record, seeds 0 and 1
    python benchmarks/interpatient.py --rows lr_rr rf --seeds 0

    python benchmarks/interpatient.py --cross               # train on DS1, test on SVDB, and the reverse

The beats are cut from the WFDB records with ``ecgvgg prepare``'s own code. The folds are
ecgvgg's :func:`ecgvgg.resampling.cv_folds` grouped by record (no record in two parts); every row
sees the same test beats in each fold. Rows:

* ``vgg_morph``: pipelines/interpatient_cv.yaml on the Kachuee rows (``prepare``'s default)
  without rhythm columns;
* ``vgg_rhythm``: the same with the rhythm branch (``data.rhythm_columns``);
* ``vgg_rhythm_pwave``: the same on a window that holds the P wave (:data:`PWAVE`, or ``--prepare``);
* ``vgg_rhythm_svdb``: the beats that pipelines/interpatient_vgg.yaml names on its
  ``# prepare-options:`` line, with rhythm, and the MIT-BIH Supraventricular Arrhythmia Database
  (cut the same way) added to every fold's training part (``data.extra_train``), never to
  validation or test;
* ``lr_rr``: logistic regression (balanced class weights) on the pipeline's normalised RR columns;
* ``rf``: a random forest (300 trees, balanced class weights) on the Kachuee rows plus all 8 RR columns.

SVEB / VEB sensitivity (Se), positive predictivity (+P) and F1 are from the out-of-fold
predictions pooled over the folds of a seed, then averaged over the seeds; "SVEB F1 (fold)" is
the mean over all folds and seeds of the per-fold SVEB F1 ± its standard error (n = the number of
folds: both seeds split the same 22 records). ``macro-F1`` is
over N, S, V, F (Q has 8 beats in DS1). Prints a Markdown table and writes it, with the
per-fold CSV, under benchmarks/results/.
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
ROWS = ("vgg_morph", "vgg_rhythm", "vgg_rhythm_pwave", "vgg_rhythm_svdb", "lr_rr", "rf")
#: The P-wave window of the ``vgg_rhythm_pwave`` row: 0.25 s before the R peak to 0.4 s after, 125 Hz,
#: each 10 s scaled to [0, 1] as the Kachuee rows are.
PWAVE = "--method window --before 0.25 --after 0.4 --scale window"
NAMES = ["N", "S", "V", "F", "Q"]
CV_PIPELINE = ROOT / "pipelines" / "interpatient_cv.yaml"


def prepare_options(line: str | None = None, pipeline: Path = ROOT / "pipelines" / "interpatient_vgg.yaml") -> dict:
    """``prepare``'s keyword arguments from options such as ``--method window --before 0.3``
    (default: the pipeline's ``# prepare-options:`` line)."""
    if line is None:
        line = next(ln for ln in pipeline.read_text().splitlines() if ln.startswith("# prepare-options:"))
        line = line.split(":", 1)[1]
    args = shlex.split(line)
    opts = dict(zip(args[::2], args[1::2]))
    out = {"method": opts.get("--method", "kachuee")}
    for key in ("before", "after", "rate"):
        if f"--{key}" in opts:
            out[key] = float(opts[f"--{key}"])
    if "--scale" in opts:
        out["scale"] = opts["--scale"]
    if "--bandpass" in opts:
        out["filter_band"] = tuple(float(v) for v in opts["--bandpass"].split(","))
    return out


def table(records: Path, cache: Path, name: str, **options) -> Path:
    """``prepare`` a folder of records into ``cache/name.parquet`` once."""
    from ecgvgg.records import prepare_records

    path = cache / f"{name}.parquet"
    if not path.exists():
        beats, report = prepare_records(records, **options)
        beats.to_parquet(path, index=False)
        print(f"{path.name}: {report.summary()}", file=sys.stderr)
    return path


def vgg_config(data: Path, *, rhythm: bool, extra: Path | None, sets: list[str] = ()):
    """pipelines/interpatient_cv.yaml on ``data``, with or without rhythm and an extra training table."""
    from ecgvgg.config import load_config

    overrides = [*sets, f"data.path={data}"] + ([] if rhythm else ["data.rhythm_columns=[]"])
    if extra is not None:
        overrides.append(f"data.extra_train=[{extra}]")
    return load_config(CV_PIPELINE, overrides)


def vgg_fold(cfg, X: np.ndarray, y: np.ndarray, fold, seed: int, train_only: int = 0) -> np.ndarray:
    """Train the configured network on one fold's training part (ecgvgg's own fold); predict its test rows."""
    from ecgvgg.config import override
    from ecgvgg.dataset import StudyData
    from ecgvgg.folds import Fold
    from ecgvgg.study import run_fold

    cfg = override(cfg, {"split.seed": seed, "training.seed": seed, "baseline": "none"})
    columns = [f"x{i}" for i in range(X.shape[1] - len(cfg.data.rhythm_columns))] + list(cfg.data.rhythm_columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run_fold(cfg, StudyData.from_arrays(X, y, columns=columns, train_only=train_only), Fold(*fold))
    return out.pred


def sklearn_fold(row: str, X: np.ndarray, y: np.ndarray, fold, seed: int) -> np.ndarray:
    """The linear RR model or the random forest on one fold (trained on training + validation rows)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, val, test = fold
    fit_rows = np.r_[train, val]
    if row == "lr_rr":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    else:
        model = RandomForestClassifier(300, class_weight="balanced", n_jobs=-1, random_state=seed)
    model.fit(X[fit_rows], y[fit_rows])
    return model.predict(X[test])


def aami_row(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """SVEB / VEB Se, +P, F1, macro-F1 over N S V F and jκ of one set of predictions."""
    from ecgvgg.metrics import aami_scores, confusion, jk_index

    m = confusion(y, pred, range(5))
    a = aami_scores(m, NAMES)
    out = {f"{beat}_{key}": a[c][measure] for c, beat in (("S", "sveb"), ("V", "veb"))
           for measure, key in (("Se", "se"), ("+P", "ppv"), ("F1", "f1"))}
    out["macro_f1"] = float(np.mean([a[c]["F1"] for c in ("N", "S", "V", "F")]))
    out["jk"] = jk_index(m, NAMES)["jk"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the rows, print the Markdown tables and write them with the per-fold CSV."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=Path, default=SHARED / "mitdb_ds1")
    p.add_argument("--svdb", type=Path, default=SHARED / "svdb")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--cross", action="store_true", help="only the cross-database check (DS1 -> SVDB, SVDB -> DS1)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--cache", type=Path, default=Path("/tmp/ecgvgg_interpatient"))
    p.add_argument("--out", default="interpatient")
    p.add_argument("--prepare", metavar="OPTIONS", default=PWAVE,
                   help=f"prepare options of the P-wave row (default {PWAVE!r})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override pipelines/interpatient_cv.yaml for the VGG rows (repeatable)")
    args = p.parse_args(argv)
    needs_svdb = args.cross or any("svdb" in r for r in args.rows)
    for folder in [args.records] + ([args.svdb] if needs_svdb else []):
        if not folder.is_dir():
            print(f"error: {folder}: no such folder of WFDB records", file=sys.stderr)
            return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    tables = {"kachuee": table(args.records, args.cache, "ds1_kachuee"),
              "pwave": prepared(args.records, args.cache, "ds1", prepare_options(args.prepare)),
              "shipped": prepared(args.records, args.cache, "ds1", prepare_options())}
    if needs_svdb:
        tables["svdb"] = prepared(args.svdb, args.cache, "svdb", prepare_options())
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    if args.cross:
        text = "\n".join(cross_database(tables, args.seeds, args.sets))
        print(text)
        (out / f"{args.out}_cross.md").write_text(text + "\n")
        return 0
    results = [r for row in args.rows for r in run_row(row, tables, args)]
    y = pd.read_parquet(tables["kachuee"], columns=["label"])["label"].to_numpy()
    text = "\n".join(summarise(results, y, args.rows, args.seeds))
    print(text)
    (out / f"{args.out}.md").write_text(text + "\n")
    pd.DataFrame([{k: v for k, v in r.items() if k not in ("test", "pred")} for r in results if r["seed"] >= 0]
                 ).to_csv(out / f"{args.out}_folds.csv", index=False)
    return 0


def prepared(records: Path, cache: Path, name: str, options: dict) -> Path:
    """:func:`table` under a file name that says the options."""
    tag = re.sub(r"[^A-Za-z0-9.]+", "-", "_".join(f"{k}{v}" for k, v in options.items()))
    return table(records, cache, f"{name}_{tag}", **options)


def run_row(row: str, tables: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    """Every fold of every seed of one row, plus a timing entry (``seed`` -1)."""
    from ecgvgg.dataset import load
    from ecgvgg.folds import cv_folds
    from ecgvgg.records import RHYTHM_COLUMNS

    started = time.perf_counter()
    base = pd.read_parquet(tables["kachuee"])
    y_main, groups = base["label"].to_numpy(), base["record"].astype(str).to_numpy()
    if row.startswith("vgg"):
        data = {"vgg_morph": "kachuee", "vgg_rhythm": "kachuee", "vgg_rhythm_pwave": "pwave"}.get(row, "shipped")
        cfg = vgg_config(tables[data], rhythm=row != "vgg_morph",
                         extra=tables["svdb"] if row.endswith("svdb") else None, sets=args.sets)
        loaded = load(cfg)
        X, y, n_extra = loaded.X, loaded.y, loaded.train_only
    else:
        rr = list(vgg_config(tables["kachuee"], rhythm=True, extra=None).data.rhythm_columns)
        cols = rr if row == "lr_rr" else [c for c in base.columns if c.startswith("x")] + list(RHYTHM_COLUMNS)
        X, y, n_extra = base[cols].to_numpy(np.float32), y_main, 0
    results = []
    for seed in args.seeds:
        folds = cv_folds(y, folds=args.folds, groups=np.r_[groups, np.full(n_extra, "extra")], val_size=0.1,
                         seed=seed, classes=range(5), train_only=n_extra)
        for k, fold in enumerate(folds, start=1):
            t0 = time.perf_counter()
            pred = vgg_fold(cfg, X, y, fold, seed, n_extra) if row.startswith("vgg") else sklearn_fold(row, X, y, fold, seed)
            results.append({"row": row, "seed": seed, "fold": k, "seconds": time.perf_counter() - t0,
                            "test": fold[2], "pred": pred, **aami_row(y[fold[2]], pred)})
            print(f"{row} seed {seed} fold {k}: SVEB F1 {results[-1]['sveb_f1']:.3f}, "
                  f"VEB F1 {results[-1]['veb_f1']:.3f} ({results[-1]['seconds']:.0f} s)", file=sys.stderr)
    results.append({"row": row, "seed": -1, "fold": 0, "seconds": time.perf_counter() - started})
    return results


def cross_database(tables: dict[str, Path], seeds: list[int], sets: list[str]) -> list[str]:
    """Train the shipped configuration on all of one database (validation carved by record), test on the other."""
    from ecgvgg.dataset import load
    from ecgvgg.folds import split_indices

    head = "| trained on | tested on | SVEB Se | SVEB +P | SVEB F1 | VEB Se | VEB +P | VEB F1 | macro-F1 (NSVF) | jκ | minutes |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for source, target in (("shipped", "svdb"), ("svdb", "shipped")):
        started, scores = time.perf_counter(), []
        cfg = vgg_config(tables[source], rhythm=True, extra=tables[target], sets=sets)
        loaded = load(cfg)  # the target's rows come last
        g = np.r_[np.full(loaded.scored, "source"), np.full(loaded.train_only, "target")]
        groups = np.char.add(np.char.add(g, ":"), loaded.groups.astype(str))
        Xa, ya = loaded.X, loaded.y
        for seed in seeds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fold = split_indices(ya, groups=groups, val_size=cfg.split.val_size, seed=seed, classes=range(5),
                                     test_groups=sorted(set(groups[g == "target"])),
                                     train_groups=sorted(set(groups[g == "source"])))
            pred = vgg_fold(cfg, Xa, ya, fold, seed)
            scores.append(aami_row(ya[fold.test], pred))
        mean = {k: float(np.mean([sc[k] for sc in scores])) for k in scores[0]}
        name = {"shipped": "MIT-BIH DS1", "svdb": "SVDB"}
        lines.append(f"| {name[source]} | {name[target]} | {mean['sveb_se']:.3f} | {mean['sveb_ppv']:.3f} | "
                     f"{mean['sveb_f1']:.3f} | {mean['veb_se']:.3f} | {mean['veb_ppv']:.3f} | {mean['veb_f1']:.3f} | "
                     f"{mean['macro_f1']:.3f} | {mean['jk']:.3f} | {(time.perf_counter() - started) / 60:.1f} |")
        print(lines[-1], file=sys.stderr)
    return lines


def summarise(results: list[dict], y: np.ndarray, rows: list[str], seeds: list[int]) -> list[str]:
    """The Markdown table: pooled out-of-fold scores per seed averaged, per-fold SVEB F1 with its standard error."""
    head = ("| model | SVEB Se | SVEB +P | SVEB F1 | SVEB F1 (fold) | VEB Se | VEB +P | VEB F1 | macro-F1 (NSVF) "
            "| jκ | minutes |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for row in rows:
        mine = [r for r in results if r["row"] == row and r["seed"] >= 0]
        pooled = []
        for seed in seeds:
            parts = [r for r in mine if r["seed"] == seed]
            test = np.concatenate([r["test"] for r in parts])
            pred = np.concatenate([r["pred"] for r in parts])
            pooled.append(aami_row(y[test], pred))
        mean = {k: float(np.mean([p[k] for p in pooled])) for k in pooled[0]}
        fold_f1 = np.array([r["sveb_f1"] for r in mine])
        folds = len({r["fold"] for r in mine})  # seeds re-split the same records: n is the folds of one seed
        se = fold_f1.std(ddof=1) / np.sqrt(folds) if folds > 1 else 0.0
        minutes = sum(r["seconds"] for r in results if r["row"] == row and r["seed"] < 0) / 60
        lines.append(f"| {row} | {mean['sveb_se']:.3f} | {mean['sveb_ppv']:.3f} | {mean['sveb_f1']:.3f} | "
                     f"{fold_f1.mean():.3f} ± {se:.3f} | {mean['veb_se']:.3f} | {mean['veb_ppv']:.3f} | "
                     f"{mean['veb_f1']:.3f} | {mean['macro_f1']:.3f} | {mean['jk']:.3f} | {minutes:.1f} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())

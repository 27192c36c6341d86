"""One change at a time: each training lever against the default pipeline, on the same grouped folds.

    python benchmarks/levers.py                         # every lever, imbalanced file, seeds 0 and 1
    python benchmarks/levers.py --levers default shift5 --seeds 0 1 2

Every lever is ``pipelines/adasyn_vgg.yaml`` with a few ``--set`` overrides (``default`` is the
pipeline as it was before the levers were adopted: see ``FORMER``), cross-validated
by :func:`accuracy.run` (grouped 5-fold, the same test beats for every lever and seed). The
table gives each lever's mean macro-F1 and its paired difference from ``default`` and from the
random forest, fold by fold, with the standard error of that difference: a lever "helps" only
when the difference is clearly larger than its standard error. Each lever's folds are kept in
``benchmarks/results/lever_NAME_folds.csv`` and reused unless ``--rerun``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import NAMES, ROOT, SHARED, run, versus as paired  # noqa: E402

#: The pipeline before the levers below were adopted: ADASYN, amplitude scaling 0.1, noise 0.01,
#: plain cross-entropy, Adam with reduce-on-plateau.
FORMER = ["training.label_smoothing=0", "training.augment_shift=0", "training.augment_wander=0"]
#: Lever name -> overrides of pipelines/adasyn_vgg.yaml; each lever is one change from ``default``.
LEVERS: dict[str, list[str]] = {
    "default": FORMER,
    "shift5": [*FORMER, "training.augment_shift=5"],
    "stretch10": [*FORMER, "training.augment_stretch=0.1"],
    "wander05": [*FORMER, "training.augment_wander=0.05"],
    "mixup02": [*FORMER, "training.mixup=0.2"],
    "smooth01": [*FORMER, "training.label_smoothing=0.1"],
    "focal": [*FORMER, "training.loss=focal"],
    "adamw_cos": [*FORMER, "training.optimizer=adamw", "training.schedule=cosine", "training.warmup_epochs=3"],
    "cos_noes": [*FORMER, "training.schedule=cosine", "training.early_stopping_patience=0"],
    "combo1": [],  # the pipeline as shipped: shift 5, wander 0.05, label smoothing 0.1
    # further changes from the shipped pipeline
    "combo1_tta": [],  # test-time augmentation: softmax averaged over shifts of -2..2 samples
    "combo2": ["training.optimizer=adamw", "training.schedule=cosine", "training.warmup_epochs=3"],
    "combo1_w05": ["model.width=0.5"],
    "combo1_w0125": ["model.width=0.125"],
    "combo1_d128": ["model.dense_units=128"],
    "combo1_d512": ["model.dense_units=512"],
    "combo1_smote": ["resampling.sampler=smote"],
    "combo1_random": ["resampling.sampler=random"],
    "combo1_cw": ["resampling.sampler=none", "training.class_weight=balanced"],
}
RESULTS = ROOT / "benchmarks" / "results"


def folds_of(name: str, data: Path, seeds: list[int], rerun: bool) -> pd.DataFrame:
    """Per-fold scores of one lever (``rf``: the random forest), from the cache unless ``rerun``."""
    path = RESULTS / f"lever_{name}_folds.csv"
    if path.is_file() and not rerun:
        cached = pd.read_csv(path)
        model = "vgg1d_tta" if name.endswith("_tta") else cached["model"].iloc[0]
        cached = cached[(cached["data"] == data.name) & cached["seed"].isin(seeds) & (cached["model"] == model)]
        if set(cached["seed"]) == set(seeds):
            return cached
    model = "rf" if name == "rf" else "vgg1d_tta" if name.endswith("_tta") else "vgg1d"
    overrides = [] if name == "rf" else LEVERS[name]
    df = pd.concat([run(data, [model], 5, seed, overrides) for seed in seeds], ignore_index=True)
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(path, index=False)
    return df


def table(frames: dict[str, pd.DataFrame]) -> str:
    """Markdown: one line per lever, paired differences from ``default`` and ``rf``."""
    lines = [
        "| lever | settings | macro-F1 (mean ± sd) | vs former default | vs shipped | vs rf | "
        + " | ".join(f"recall {n}" for n in NAMES)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(NAMES),
    ]
    for name, df in frames.items():
        change = [o for o in LEVERS.get(name, []) if o not in FORMER]
        settings = (
            "random forest"
            if name == "rf"
            else "former default"
            if name == "default"
            else ", ".join(change) or "pipelines/adasyn_vgg.yaml as shipped"
        )
        if name.startswith("combo1_") or name == "combo2":
            settings = "shipped + " + (", ".join(change) or "test-time shifts -2..2")
        recalls = " | ".join(f"{df[f'recall_{n}'].mean():.3f}" for n in NAMES)
        shipped = paired(df, frames["combo1"]) if "combo1" in frames and name != "combo1" else "-"
        lines.append(
            f"| {name} | {settings} | {df['macro_f1'].mean():.3f} ± {df['macro_f1'].std():.3f} | "
            f"{paired(df, frames['default'])} | {shipped} | {paired(df, frames['rf'])} | {recalls} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED / "mitbih_beats_imbalanced.parquet")
    p.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--rerun", action="store_true", help="train again even where results are kept")
    a = p.parse_args()
    if not a.data.is_file():
        sys.exit(f"error: no such file: {a.data} (the real beats ship in ../shared/data; pass --data PATH)")
    names = ["default", "rf", *[n for n in a.levers if n != "default"]]
    frames = {n: folds_of(n, a.data, a.seeds, a.rerun) for n in names}
    text = table(frames)
    print(text)
    (RESULTS / "levers.md").write_text(text + "\n")


if __name__ == "__main__":
    main()

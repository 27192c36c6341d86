"""Labelling raw recordings: beat detection, the packaged model on detected beats, resampled input, speed.

    python benchmarks/annotate.py                 # every table
    python benchmarks/annotate.py --only detection

Tables (MIT-BIH DS1 from ../shared/data, 22 records of 30 minutes; beats matched within 150 ms):

* ``detection``: pooled Se and +P of three QRS detectors against the reference beat annotations
  (``sleepecg``, the one ``annotate`` uses; wfdb's XQRS and GQRS), with their time per record;
* ``classes``: the packaged model's AAMI class table on the beats ``sleepecg`` found (note: the model was
  trained on DS1 and SVDB, so this table is optimistic; the model card gives its cross-validated scores);
* ``resampled``: one record written at 360, 250 and 128 Hz, labelled three times; the share of
  beats matched across the three that get the same label;
* ``speed``: a 30-minute two-lead record, and a 24-hour one (that record 48 times over), labelled in a
  child process: seconds and peak memory (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DS1 = ROOT.parent / "shared" / "data" / "mitdb_ds1"


def reference_beats(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The record's signal (first two leads), its reference beat samples and their symbols (AAMI beats only)."""
    import wfdb

    from ecgvgg.core.records import AAMI_SYMBOLS

    rec = wfdb.rdrecord(str(path))
    ann = wfdb.rdann(str(path), "atr")
    keep = [i for i, s in enumerate(ann.symbol) if s in AAMI_SYMBOLS]
    return rec, ann.sample[keep], [ann.symbol[i] for i in keep]


def detection(records: list[Path]) -> list[str]:
    """Pooled Se / +P and seconds per record of each detector."""
    import wfdb.processing as wp
    from sleepecg import detect_heartbeats

    from ecgvgg.core.annotate import MATCH_S, match_beats
    from ecgvgg.core.records import lead_index

    detectors = {
        "sleepecg (used)": lambda x, fs: detect_heartbeats(x.astype(np.float64), fs),
        "wfdb XQRS": lambda x, fs: wp.xqrs_detect(x, fs, verbose=False),
        "wfdb GQRS": lambda x, fs: wp.gqrs_detect(x, fs=fs),
    }
    totals = {n: [0, 0, 0, 0.0] for n in detectors}  # matched, reference, detected, seconds
    for path in records:
        rec, ref, _ = reference_beats(path)
        x = rec.p_signal[:, lead_index(rec.sig_name, "MLII")]
        for name, detect in detectors.items():
            t0 = time.perf_counter()
            found = np.asarray(detect(x, rec.fs), dtype=np.int64)
            totals[name][3] += time.perf_counter() - t0
            matched = len(match_beats(ref, np.sort(found), MATCH_S * rec.fs))
            totals[name][:3] = [totals[name][0] + matched, totals[name][1] + len(ref), totals[name][2] + len(found)]
        print(f"{path.name} done", file=sys.stderr, flush=True)
    lines = ["| detector | Se | +P | reference beats | detected | seconds per record |", "|---|---|---|---|---|---|"]
    for name, (m, r, d, s) in totals.items():
        lines.append(f"| {name} | {m / r:.4f} | {m / d:.4f} | {r} | {d} | {s / len(records):.2f} |")
    return lines


def classes(records: list[Path]) -> list[str]:
    """The packaged model's pooled class table on detected beats."""
    from ecgvgg.core.annotate import compare, label, open_recordings, plan_for
    from ecgvgg.core.inference import load_model
    from ecgvgg.core.metrics import aami_scores
    from ecgvgg.pretrained import MODEL

    loaded = load_model(MODEL)
    names = loaded.class_names
    pooled = np.zeros((len(names), len(names)), np.int64)
    matched = ref_total = det_total = 0
    for path in records:
        rec = open_recordings([path])[0]
        labelled = label(rec, loaded, plan_for(rec, loaded.contract))
        _, ref, symbols = reference_beats(path)
        out = compare(labelled, ref, symbols)
        matched, ref_total, det_total = matched + out["matched_beats"], ref_total + len(ref), det_total + len(labelled.beats)
        pooled += np.asarray(out["confusion"], dtype=np.int64)
    a = aami_scores(pooled, names)
    lines = [
        f"matched {matched} of {ref_total} reference beats ({det_total} detected)",
        "",
        "| class | Se | +P | F1 | reference beats |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {a[n]['Se']:.3f} | {a[n]['+P']:.3f} | {a[n]['F1']:.3f} | {int(pooled[i].sum())} |" for i, n in enumerate(names)
    ]
    return lines


def resampled(record: Path) -> list[str]:
    """Labels of one record at 360, 250 and 128 Hz: the share of beats matched across all three with one label."""
    import wfdb

    from ecgvgg.core.annotate import MATCH_S, label, match_beats, open_recordings, plan_for
    from ecgvgg.core.inference import load_model
    from ecgvgg.pretrained import MODEL
    from ecgvgg.core.records import resample

    loaded = load_model(MODEL)
    rec = wfdb.rdrecord(str(record))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fs in (360, 250, 128):
            signal = np.column_stack([resample(rec.p_signal[:, k], rec.fs, fs) for k in range(rec.n_sig)])
            name = f"r{fs}"
            wfdb.wrsamp(
                name,
                fs=fs,
                units=rec.units,
                sig_name=rec.sig_name,
                p_signal=signal.astype(np.float64),
                fmt=["16"] * rec.n_sig,
                write_dir=tmp,
            )
            r = open_recordings([Path(tmp) / name])[0]
            results[fs] = label(r, loaded, plan_for(r, loaded.contract)).beats
    base = results[360]
    t = base["time_s"].to_numpy()
    same = np.ones(len(base), dtype=bool)
    matched_all = np.ones(len(base), dtype=bool)
    for fs in (250, 128):
        other = results[fs]
        pairs = dict(match_beats(t, other["time_s"].to_numpy(), MATCH_S))
        keep = np.array([i in pairs for i in range(len(base))])
        labels = np.array([other["label"].iloc[pairs[i]] if i in pairs else "" for i in range(len(base))])
        same &= keep & (labels == base["label"].to_numpy())
        matched_all &= keep
    share = same.sum() / max(1, matched_all.sum())
    return [
        "| record | beats at 360 Hz | matched at 250 and 128 Hz | same label on all three |",
        "|---|---|---|---|",
        f"| {record.name} | {len(base)} | {int(matched_all.sum())} | {share:.4f} |",
    ]


CHILD = """
import resource, sys, time
from pathlib import Path
from ecgvgg.core.annotate import label, open_recordings, plan_for
from ecgvgg.core.inference import load_model
from ecgvgg.pretrained import MODEL
loaded = load_model(MODEL)
rec = open_recordings([Path(sys.argv[1])])[0]
t0 = time.perf_counter()
beats = label(rec, loaded, plan_for(rec, loaded.contract)).beats
seconds = time.perf_counter() - t0
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(f"{rec.seconds / 3600:.1f}|{len(beats)}|{seconds:.1f}|{peak:.0f}")
"""


def speed(record: Path) -> list[str]:
    """Seconds and peak memory to label a 30-minute and a 24-hour two-lead record, each in a fresh process."""
    import wfdb

    rec = wfdb.rdrecord(str(record), physical=False)  # digital samples, written back as they are
    lines = ["| recording | beats | seconds | peak memory (MB) |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        long = np.tile(rec.d_signal, (48, 1))
        wfdb.wrsamp(
            "day",
            fs=rec.fs,
            units=rec.units,
            sig_name=rec.sig_name,
            d_signal=long,
            fmt=rec.fmt,
            adc_gain=rec.adc_gain,
            baseline=rec.baseline,
            write_dir=tmp,
        )
        for path in (record, Path(tmp) / "day"):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, cwd=ROOT, timeout=1800
            )
            if done.returncode:
                raise RuntimeError(done.stderr[-2000:])
            hours, beats, seconds, peak = done.stdout.strip().splitlines()[-1].split("|")
            lines.append(f"| {hours} h, {rec.n_sig} leads at {rec.fs:g} Hz | {beats} | {seconds} | {peak} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the tables and write them under benchmarks/results/annotate.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=Path, default=DS1)
    p.add_argument(
        "--only",
        nargs="+",
        choices=("detection", "classes", "resampled", "speed"),
        default=["detection", "classes", "resampled", "speed"],
    )
    args = p.parse_args(argv)
    if not args.records.is_dir():
        print(f"error: {args.records}: no such folder of WFDB records", file=sys.stderr)
        return 2
    records = sorted(p.with_suffix("") for p in args.records.glob("*.hea"))
    text = []
    for table in args.only:
        part = {
            "detection": lambda: detection(records),
            "classes": lambda: classes(records),
            "resampled": lambda: resampled(records[0]),
            "speed": lambda: speed(records[0]),
        }[table]()
        text += [f"### {table}", "", *part, ""]
        print("\n".join(text[-len(part) - 3 :]), flush=True)
    out = ROOT / "benchmarks" / "results" / "annotate.md"
    out.write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

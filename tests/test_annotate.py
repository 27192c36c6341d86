"""ecgvgg annotate: beats found and labelled in raw recordings with the packaged model, and bad input refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import DATA, write_record
from ecgvgg.core.annotate import MATCH_S, Labelled, Recording, compare, match_beats
from ecgvgg.cli.main import app

wfdb = pytest.importorskip("wfdb")
RECORD = DATA / "records" / "209m8"


def _annotate(*args: str):
    return CliRunner().invoke(app, ["annotate", *map(str, args)])


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The 3-minute cut of record 209 labelled by the packaged model, compared with its reference beats."""
    out = tmp_path_factory.mktemp("labels")
    res = _annotate(RECORD, "-o", out, "--reference", "atr")
    assert res.exit_code == 0, res.output
    return out, res.output


def test_annotations_read_back_with_wfdb_and_match_the_csv(labelled):
    out, output = labelled
    ann = wfdb.rdann(str(out / "209m8"), "ecgvgg")
    table = pd.read_csv(out / "209m8.csv")
    assert list(table.columns[:3]) == ["sample", "time_s", "label"] and {f"p_{c}" for c in "NSVFQ"} <= set(table)
    assert ann.sample.tolist() == table["sample"].tolist() and ann.symbol == table["label"].tolist()
    assert set(ann.symbol) <= set("NSVFQ") and ann.fs == 360
    np.testing.assert_allclose(table.filter(like="p_").sum(axis=1), 1, atol=1e-3)
    assert (out / "209m8.png").stat().st_size > 10_000
    report = json.loads((out / "209m8.json").read_text())
    assert report["detection"]["Se"] >= 0.99 and report["detection"]["+P"] >= 0.99
    assert report["classes"]["S"]["reference_beats"] > 100  # the cut holds runs of S beats
    assert "detection Se" in output and "S: Se" in output


def test_the_comparison_by_hand_on_a_short_sequence():
    fs = 100.0
    ref = np.array([100, 200, 300, 400, 500])  # N N S N V
    symbols = ["N", "N", "A", "N", "V"]
    det = np.array([104, 190, 230, 320, 505])  # 230 is an extra beat; 400 is missed; 320 is 20 samples late
    rec = Recording("x", fs, 1000, ["MLII"], lambda a, b: np.zeros((b - a, 1)), Path("x"))
    beats = pd.DataFrame({"sample": det, "time_s": det / fs, "label": ["N", "S", "N", "S", "N"]})
    out = compare(Labelled(rec, beats, ["N", "S", "V", "F", "Q"]), ref, symbols)
    # within 150 ms (15 samples): 100-104, 200-190, 300-320 is 20 samples: no; 500-505
    assert match_beats(ref, det, MATCH_S * fs) == [(0, 0), (1, 1), (4, 4)]
    assert out["matched_beats"] == 3 and out["detection"] == {"Se": 3 / 5, "+P": 3 / 5}
    assert out["classes"]["N"]["Se"] == pytest.approx(1 / 2)  # of the two matched N beats, one called S
    assert out["classes"]["V"]["Se"] == 0 and out["classes"]["S"]["+P"] == 0
    assert out["confusion"][0] == [1, 1, 0, 0, 0] and out["confusion"][2] == [1, 0, 0, 0, 0]


def test_resampled_and_other_formats_get_the_same_labels(labelled, tmp_path):
    from ecgvgg.core.records import resample

    out, _ = labelled
    base = pd.read_csv(out / "209m8.csv")
    rec = wfdb.rdrecord(str(RECORD))
    at250 = np.column_stack([resample(rec.p_signal[:, k], 360, 250) for k in range(2)]).astype(np.float64)
    write_record(tmp_path, "r250", at250, 250)
    pd.DataFrame(rec.p_signal, columns=rec.sig_name).to_csv(tmp_path / "r360.csv", index=False)
    from wfdb.io.convert.edf import wfdb_to_edf

    shutil.copy(RECORD.with_suffix(".hea"), tmp_path / "209m8.hea")
    shutil.copy(RECORD.with_suffix(".dat"), tmp_path / "209m8.dat")
    wfdb_to_edf(str(tmp_path / "209m8"), output_filename=str(tmp_path / "e360.edf"))
    res = _annotate(tmp_path / "r250", tmp_path / "r360.csv", tmp_path / "e360.edf", "--fs", "360", "-o", tmp_path / "o")
    assert res.exit_code == 2 and "--fs: only for CSV input" in res.output  # one --fs for CSV only
    res = _annotate(tmp_path / "r250", "-o", tmp_path / "o")
    assert res.exit_code == 0, res.output
    res = _annotate(tmp_path / "r360.csv", "--fs", "360", "-o", tmp_path / "o")
    assert res.exit_code == 0, res.output
    res = _annotate(tmp_path / "e360.edf", "-o", tmp_path / "o")
    assert res.exit_code == 0, res.output
    write_record(tmp_path, "mlii", rec.p_signal[:, :1].astype(np.float64), 360, ("MLII",))  # the packaged model reads one lead
    res = _annotate(tmp_path / "mlii", "-o", tmp_path / "o")
    assert res.exit_code == 0, res.output
    t = base["time_s"].to_numpy()
    for name in ("r250", "r360", "e360", "mlii"):
        other = pd.read_csv(tmp_path / "o" / f"{name}.csv")
        pairs = match_beats(t, other["time_s"].to_numpy(), MATCH_S)
        assert len(pairs) >= 0.99 * len(base), name
        same = np.mean([base["label"].iloc[i] == other["label"].iloc[j] for i, j in pairs])
        assert same >= 0.95, (name, same)


def test_record_consensus_on_request_draws_a_record_s_answers_together(labelled, tmp_path):
    out, _ = labelled
    base = pd.read_csv(out / "209m8.csv")  # the packaged model answers beat by beat
    res = _annotate(RECORD, "-o", tmp_path / "c", "--consensus", "0.6")
    assert res.exit_code == 0, res.output
    together = pd.read_csv(tmp_path / "c" / "209m8.csv")
    assert together["sample"].tolist() == base["sample"].tolist()
    p = [f"p_{c}" for c in "NSVFQ"]
    assert together[p].var().sum() < base[p].var().sum()  # beats alike answer alike
    assert np.abs(together[p].to_numpy() - base[p].to_numpy()).max() > 0.01
    np.testing.assert_allclose(together[p].sum(axis=1), 1, atol=1e-3)
    assert (together["label"] == base["label"]).mean() > 0.8
    res = _annotate(RECORD, "-o", tmp_path / "z", "--consensus", "0")
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "z" / "209m8.csv"), base)  # 0: none, as the model is


@pytest.mark.parametrize(
    "case,says",
    [
        ("missing_dat", "209m8.dat: missing"),
        ("truncated_dat", "209m8.dat: truncated"),
        ("no_lead", "no lead 'V9' (leads: MLII, V1)"),
        ("low_rate", "sampled at 90 Hz; annotate needs at least 100 Hz"),
        ("flat", "is flat or holds no detectable beats"),
        ("nan", "s without values (NaN)"),
        ("csv_without_fs", "give it with --fs HZ"),
        ("taken", "results for 209m8 are already there; pass --overwrite"),
        ("no_reference", "no reference annotations 209m8.qrs"),
        ("consensus", "--consensus 1: must be at least 0 and below 1"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_output(tmp_path, case, says):
    rec = wfdb.rdrecord(str(RECORD))
    src = tmp_path / "in"
    src.mkdir()
    out = tmp_path / "out"
    args = ["-o", out]
    for ext in ("hea", "dat", "atr"):
        shutil.copy(RECORD.with_suffix(f".{ext}"), src / f"209m8.{ext}")
    target: Path = src / "209m8"
    if case == "missing_dat":
        (src / "209m8.dat").unlink()
    elif case == "truncated_dat":
        (src / "209m8.dat").write_bytes((src / "209m8.dat").read_bytes()[:5000])
    elif case == "no_lead":
        args += ["--lead", "V9"]
    elif case == "low_rate":
        target = write_record(src, "slow", rec.p_signal[::4].astype(np.float64), 90)
    elif case == "flat":
        target = write_record(src, "flat", np.zeros((360 * 60, 2)), 360)
    elif case == "nan":
        x = rec.p_signal.astype(np.float64).copy()
        x[3600 : 3600 + 360 * 20, 0] = np.nan
        target = write_record(src, "gap", x, 360)
    elif case == "csv_without_fs":
        target = src / "209m8.csv"
        pd.DataFrame(rec.p_signal, columns=rec.sig_name).to_csv(target, index=False)
    elif case == "taken":
        out.mkdir()
        (out / "209m8.csv").write_text("sample\n")
    elif case == "no_reference":
        args += ["--reference", "qrs"]
    elif case == "consensus":
        args += ["--consensus", "1"]
    res = _annotate(target, *args)
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and says in res.output, res.output
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == (["209m8.csv"] if case == "taken" else []), left

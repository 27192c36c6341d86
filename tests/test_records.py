"""WFDB import on real records written from real MIT-BIH windows, the DS1/DS2 preset, AAMI metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.signal import find_peaks
from typer.testing import CliRunner

from conftest import DATA
from ecgvgg.cli.main import app
from ecgvgg.core.metrics import aami_scores
from ecgvgg.core.records import DS1, DS2, PACED, prepare_records
from ecgvgg.core.folds import split_then_oversample

wfdb = pytest.importorskip("wfdb")
SYMBOL = {0: "N", 1: "A", 2: "V", 3: "F", 4: "/"}
FS = 360


def _r_peaks(signal: np.ndarray) -> np.ndarray:
    """R peaks on the rectified, detrended signal, at least 0.25 s apart."""
    x = np.abs(signal - np.median(signal))
    peaks, _ = find_peaks(x, distance=int(0.25 * FS), height=0.5 * np.percentile(x, 99))
    return peaks


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The sample windows as WFDB records (signal + beat annotations), one record per window."""
    folder = tmp_path_factory.mktemp("records")
    windows = pd.read_parquet(DATA / "mitbih_windows_sample.parquet")
    truth = {}
    for _, row in windows.iterrows():
        name = row["segment"]
        signal = row.filter(regex=r"^s\d+$").to_numpy(np.float64)
        peaks = _r_peaks(signal)
        wfdb.wrsamp(name, fs=FS, units=["mV"], sig_name=["MLII"], p_signal=signal[:, None], fmt=["16"], write_dir=str(folder))
        symbols = [SYMBOL[int(row["label"])]] * len(peaks)
        # a rhythm annotation and an unclassifiable beat, neither of which is a kept beat
        samples = np.r_[0, peaks, len(signal) - 1]
        wfdb.wrann(
            name, "atr", samples, symbol=["+", *symbols, "?"], aux_note=["(N", *[""] * len(peaks), ""], write_dir=str(folder)
        )
        truth[name] = (int(row["label"]), peaks)
    return folder, truth


def test_prepare_cuts_one_labelled_row_per_annotated_beat(records):
    folder, truth = records
    beats, report = prepare_records(folder)
    assert set(beats["record"]) == set(truth)
    for name, (label, peaks) in truth.items():
        rows = beats[beats["record"] == name]
        assert rows["sample"].tolist() == peaks.tolist()
        assert (rows["label"] == label).all()
    x = beats.filter(like="x").to_numpy()
    assert x.shape[1] == 187 and x.min() >= 0 and x.max() <= 1  # Kachuee: window scaled to [0, 1]
    assert (x[:, -10:] == 0).mean() > 0.5  # beats are shorter than 187 samples and zero-padded
    assert report.non_beat_annotations == len(truth) and report.unclassified_beats == len(truth)
    assert not report.skipped_records


def test_window_method_and_bandpass(records):
    folder, _ = records
    beats, _ = prepare_records(folder, method="window", before=0.2, after=0.4, filter_band=(0.5, 40))
    assert beats.filter(like="x").shape[1] == round(0.2 * 125) + round(0.4 * 125)
    # the R peak sits at the window's centre offset: largest deflection near sample 25
    x = np.abs(beats.filter(like="x").to_numpy())
    assert np.median(np.abs(np.argmax(x, axis=1) - 25)) <= 3


def test_damaged_record_is_reported_not_dropped_silently(records, tmp_path):
    folder, truth = records
    import shutil

    for f in folder.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "N000.dat").write_bytes(b"\x00\x01")  # truncated signal file
    (tmp_path / "F000.atr").unlink()
    beats, report = prepare_records(tmp_path)
    assert set(report.skipped_records) == {"N000", "F000"}
    assert "N000" not in set(beats["record"]) and len(report.beats) == len(truth) - 2
    assert "skipped: " in report.summary()


def test_prepare_command_writes_parquet(records, tmp_path):
    folder, truth = records
    out = tmp_path / "beats.parquet"
    res = CliRunner().invoke(app, ["prepare", str(folder), "-o", str(out)])
    assert res.exit_code == 0, res.output
    beats = pd.read_parquet(out)
    assert {"label", "record", "sample"} <= set(beats.columns)
    assert f"from {len(truth)} records" in res.output
    res = CliRunner().invoke(app, ["prepare", str(tmp_path / "nope"), "-o", str(out)])
    assert res.exit_code == 2 and "nope: no such folder" in res.output


def test_a_record_without_annotations_is_named_with_its_missing_file(tmp_path):
    import shutil

    for ext in ("hea", "dat"):
        shutil.copy(DATA / "records" / f"209m8.{ext}", tmp_path / f"209m8.{ext}")
    out = tmp_path / "beats.parquet"
    res = CliRunner().invoke(app, ["prepare", str(tmp_path), "-o", str(out)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "209m8.atr not found" in res.output and "--annotator" in res.output and not out.exists()
    shutil.copy(DATA / "records" / "209m8.atr", tmp_path / "209m8.qrs")  # another annotator's extension
    res = CliRunner().invoke(app, ["prepare", str(tmp_path), "-o", str(out), "--annotator", "qrs"])
    assert res.exit_code == 0 and len(pd.read_parquet(out)) > 100, res.output


def test_de_chazal_preset_never_shares_a_record():
    assert not set(DS1) & set(DS2) and not (set(DS1) | set(DS2)) & set(PACED)
    assert len(DS1) == len(DS2) == 22
    rng = np.random.default_rng(0)
    records = np.array([r for r in (*DS1, *DS2, *PACED) for _ in range(30)])
    y = rng.integers(0, 3, len(records))
    X = rng.normal(y[:, None], 1, (len(y), 10)).astype(np.float32)
    with pytest.warns(UserWarning, match="120 rows belong to groups in neither"):
        s = split_then_oversample(X, y, groups=records, sampler="smote", test_groups=DS2, train_groups=DS1)
    train, val, test = (set(records[i]) for i in (s.train_index, s.val_index, s.test_index))
    assert test == set(DS2)
    assert train | val <= set(DS1) and not train & val
    assert not (train | val | test) & set(PACED)


def test_aami_metrics_match_a_hand_computed_matrix():
    m = np.array([[90, 5, 5], [10, 30, 0], [0, 0, 60]])  # rows true N S V, columns predicted
    s = aami_scores(m, ["N", "S", "V"])
    assert s["S"]["Se"] == pytest.approx(30 / 40)
    assert s["S"]["+P"] == pytest.approx(30 / 35)
    assert s["S"]["FPR"] == pytest.approx(5 / 160)
    assert s["S"]["F1"] == pytest.approx(2 * 0.75 * (30 / 35) / (0.75 + 30 / 35))
    assert s["V"]["+P"] == pytest.approx(60 / 65) and s["V"]["Se"] == 1.0
    assert s["N"]["FPR"] == pytest.approx(10 / 100)


def test_download_without_a_connection_says_where_to_get_the_records(tmp_path):
    out = tmp_path / "mitdb"
    res = CliRunner().invoke(app, ["download", "mitdb", str(out), "--mirror", "http://127.0.0.1:9/"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "https://physionet.org/content/mitdb/1.0.0/" in res.output and not out.exists()
    res = CliRunner().invoke(app, ["download", "ptbxl", str(out)])
    assert res.exit_code == 2 and "mitdb or svdb" in res.output

"""Beats in their rhythm: RR columns from prepare, the rhythm branch end to end, extra training tables."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import DATA, RAN, ROOT, TINY_RECORDS, assert_served_as_keras, invoke_in_new_store, runs_in, sets
from ecgvgg.cli.main import app
from ecgvgg.core.metrics import jk_index
from ecgvgg.core.records import RHYTHM_COLUMNS, beats_from_signal, prepare_records, rhythm_features
from ecgvgg.core.folds import cv_folds, split_then_oversample
from ecgvgg.core.resampling import cap_per_class

wfdb = pytest.importorskip("wfdb")
CV = str(ROOT / "pipelines" / "interpatient_cv.yaml")
RHYTHM = ["rr_pre_rel", "rr_post_rel", "rr_local_rel", "rr_pre_local", "rr_post_pre", "rr_pre_median", "rr_post_median"]
#: Two real records cut to 3 minutes (MIT-BIH 208 from 0:00, 209 from 8:00): N, S, V and F beats.
TINY = ["training.epochs=8", *TINY_RECORDS, "data.channels=[]"]


def _sets(*items: str) -> list[str]:
    return sets(*TINY, *items)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """``prepare``'s default table of the two shipped record cuts."""
    beats, _ = prepare_records(DATA / "records")
    path = tmp_path_factory.mktemp("rhythm") / "beats.parquet"
    beats.to_parquet(path, index=False)
    return path


def test_rhythm_columns_by_hand_on_a_short_annotated_sequence():
    fs = 100.0
    # a rhythm annotation at 0, beats at 1.0, 2.0, 2.5 (premature, A), an unclassified beat at 3.5 and a
    # noise annotation at 4.0 (neither kept), then a normal beat at 4.5
    samples = np.array([0, 100, 200, 250, 350, 400, 450])
    symbols = ["+", "N", "N", "A", "?", "~", "N"]  # "?" has no AAMI class but is a beat of the RR sequence
    _, labels, peaks, rhythm, non_beat, unclassified = beats_from_signal(
        np.zeros(600), fs, samples, symbols, method="window", before=0.1, after=0.1
    )
    assert labels.tolist() == [0, 0, 1, 0] and peaks.tolist() == [100, 200, 250, 450]
    assert (non_beat, unclassified) == (2, 1)
    # all beats: 1.0 2.0 2.5 3.5 4.5 -> RR 1.0 0.5 1.0 1.0, mean 0.875
    assert rhythm["rr_pre"].tolist() == pytest.approx([1.0, 1.0, 0.5, 1.0])  # first beat: its post-RR
    assert rhythm["rr_post"].tolist() == pytest.approx([1.0, 0.5, 1.0, 1.0])  # last beat: its pre-RR
    assert rhythm["rr_record"].tolist() == pytest.approx([0.875] * 4)
    local = rhythm_features(np.array([100, 200, 250, 350, 450]), fs, local=2)["rr_local"]
    assert local.tolist() == pytest.approx([1.0, 1.0, 0.75, 0.75, 1.0])
    assert rhythm["rr_pre_rel"].tolist() == pytest.approx(np.array([1.0, 1.0, 0.5, 1.0]) / 0.875)
    assert rhythm["rr_pre_local"].iloc[2] == pytest.approx(0.5 / np.mean([1.0, 1.0, 0.5]))
    assert rhythm["rr_post_pre"].tolist() == pytest.approx([1.0, 0.5, 2.0, 1.0])  # the pause after the early beat
    assert rhythm["rr_median"].tolist() == pytest.approx([1.0] * 4)  # the median of the 5 pre-RR 1 1 0.5 1 1
    assert list(rhythm.columns) == list(RHYTHM_COLUMNS)


def test_median_rhythm_takes_the_beats_on_either_side_and_fewer_at_the_edges():
    # beats at 0, 1.0, 1.5, 3.0, 3.5, 4.5 s -> pre-RR 1.0 1.0 0.5 1.5 0.5 1.0
    rhythm = rhythm_features(np.array([0, 100, 150, 300, 350, 450]), 100.0, around=1)
    assert rhythm["rr_median"].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.5, 1.0, 0.75])
    assert rhythm["rr_pre_median"].tolist() == pytest.approx([1.0, 1.0, 0.5, 3.0, 0.5, 1.0 / 0.75])
    assert rhythm["rr_post_median"].tolist() == pytest.approx([1.0, 0.5, 1.5, 1.0, 1.0, 1.0 / 0.75])
    single = rhythm_features(np.array([100]), 100.0)
    assert single["rr_median"].tolist() == [0.0] and single["rr_post_pre"].tolist() == [1.0]


def test_prepare_writes_rhythm_columns_and_reads_svdb_lead_names(table, tmp_path):
    beats = pd.read_parquet(table)
    assert set(RHYTHM_COLUMNS) <= set(beats.columns) and beats[list(RHYTHM_COLUMNS)].notna().all().all()
    s = beats[beats["label"] == 1]
    assert s["rr_pre_local"].median() < beats.loc[beats["label"] == 0, "rr_pre_local"].median()  # S comes early
    # an SVDB-style record: 128 Hz, leads ECG1 and ECG2, cut at another rate
    rec = wfdb.rdrecord(str(DATA / "records" / "209m8"))
    ann = wfdb.rdann(str(DATA / "records" / "209m8"), "atr")
    step = rec.fs / 128
    signal = rec.p_signal[np.round(np.arange(0, len(rec.p_signal), step)).astype(int)]
    wfdb.wrsamp(
        "900", fs=128, units=["mV", "mV"], sig_name=["ECG1", "ECG2"], p_signal=signal, fmt=["212", "212"], write_dir=str(tmp_path)
    )
    wfdb.wrann("900", "atr", np.round(ann.sample / step).astype(int), symbol=ann.symbol, write_dir=str(tmp_path))
    svdb, report = prepare_records(tmp_path, method="window", before=0.25, after=0.4, rate=100)
    assert not report.skipped_records and svdb.filter(regex=r"^x\d+$").shape[1] == 65
    mit = beats[beats["record"] == "209m8"]
    assert len(svdb) == len(mit) and (svdb["label"].to_numpy() == mit["label"].to_numpy()).all()
    np.testing.assert_allclose(svdb["rr_pre"], mit["rr_pre"], atol=2 / 128)


def test_jk_index_by_hand():
    m = np.array([[90, 5, 5], [2, 8, 0], [1, 0, 9]])  # N S V
    kappa_po, total = 107 / 120, 120
    pe = (100 * 93 + 10 * 13 + 10 * 14) / total**2
    out = jk_index(m, ["N", "S", "V"])
    assert out["kappa"] == pytest.approx((kappa_po - pe) / (1 - pe))
    assert out["j"] == pytest.approx(0.8 + 8 / 13 + 0.9 + 9 / 14)
    assert out["jk"] == pytest.approx(out["kappa"] / 2 + out["j"] / 8)


def test_folds_never_share_a_record_and_extra_rows_only_train(sample_xyg):
    X, y, g = sample_xyg
    extra = 50
    y_all = np.r_[y.to_numpy(), np.zeros(extra, int)]
    g_all = np.r_[g.astype(str).to_numpy(), np.full(extra, "svdb")]
    for train, val, test in cv_folds(y_all, folds=3, groups=g_all, val_size=0.1, seed=0, classes=range(5), train_only=extra):
        parts = [set(g_all[p]) for p in (train, val, test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set(range(len(y), len(y_all))) <= set(train.tolist())
    s = split_then_oversample(
        np.r_[X.to_numpy(), np.ones((extra, X.shape[1]), np.float32)], y_all, groups=g_all, sampler="none", train_only=extra
    )
    assert set(range(len(y), len(y_all))) <= set(s.train_index.tolist())
    assert "svdb" not in set(g_all[s.val_index]) | set(g_all[s.test_index])
    # the inter-patient protocol: a fixed test set of groups, and the extra rows still train only
    names = sorted(set(g.astype(str)))
    s = split_then_oversample(
        np.r_[X.to_numpy(), np.ones((extra, X.shape[1]), np.float32)],
        y_all,
        groups=g_all,
        sampler="none",
        train_only=extra,
        test_groups=names[::3],
        train_groups=[n for n in names if n not in names[::3]],
    )
    assert set(g_all[s.test_index]) == set(names[::3]) and set(range(len(y), len(y_all))) <= set(s.train_index.tolist())


def test_class_balanced_epochs_draw_capped_rows_afresh():
    from ecgvgg.core.inputs import make_dataset

    y = np.r_[np.zeros(100, int), np.ones(10, int)]
    kept = cap_per_class(np.arange(110), y, 30, np.random.default_rng(0))
    assert np.bincount(y[kept]).tolist() == [30, 10] and len(set(kept.tolist())) == 40
    X = np.arange(110, dtype=np.float32)[:, None, None]
    data = make_dataset(X, y, 16, shuffle=True, max_per_class=30)
    epochs = [np.concatenate([x.numpy().ravel() for x, _ in data]).astype(int) for _ in range(3)]
    for rows in epochs:
        assert np.bincount(y[rows]).tolist() == [30, 10] and len(set(rows.tolist())) == 40
    assert len(set(epochs[0]) ^ set(epochs[1])) > 0  # another draw of class 0 each epoch


@pytest.fixture(scope="module")
def rhythm_run(tmp_path_factory, table):
    """A tiny network with the rhythm branch trained on the two real record cuts, blended with its boosted tree,
    each record's beats answering together (record consensus)."""
    blend = ("baseline=hgb", "baseline_blend=0.5", "record_consensus=0.5", "record_clusters=4")
    tmp, uri, res = invoke_in_new_store(tmp_path_factory, "rhythm_run", ["run", CV, *_sets(f"data.path={table}", *blend)])
    assert res.exit_code == 0, res.output
    run = runs_in(uri)[0]
    return tmp, uri, run, res.output


def test_the_rhythm_model_trains_saves_and_carries_its_columns(rhythm_run, table):
    import keras

    from ecgvgg.core.inference import load_model

    tmp, uri, run, output = rhythm_run
    assert "jκ index" in output and "SVEB" in output
    path = tmp / "mlruns" / "runs" / run.info.run_id / "model.keras"
    with zipfile.ZipFile(path) as z:
        contract = json.loads(z.read("ecgvgg.json"))
    assert contract["data"]["rhythm_columns"] == RHYTHM and contract["data"]["features"][-len(RHYTHM) :] == RHYTHM
    assert "sample" not in contract["data"]["features"] and "rr_pre" not in contract["data"]["features"]
    loaded = load_model(path)
    assert {"rhythm_fc", "rhythm_norm", "fc1", "block5_pool", "predictions"} <= {ly.name for ly in loaded.model.layers}
    norm = loaded.model.get_layer("rhythm_norm")
    beats = pd.read_parquet(table)
    mean = -np.asarray(norm.offset) / np.asarray(norm.scale)  # a Rescaling: (r - mean) / sd
    assert mean == pytest.approx(beats[RHYTHM].mean().to_numpy(), rel=0.2)
    assert isinstance(loaded.model, keras.Model)
    # a rhythm value changes the answer: the branch is wired in
    rows = loaded.prepare(beats.head(20))
    moved = rows.copy()
    moved[:, -len(RHYTHM) :] *= 0.5
    assert not np.allclose(loaded.model.predict(rows, verbose=0), loaded.model.predict(moved, verbose=0))


def test_evaluate_predict_and_pyfunc_read_beat_and_rhythm_columns(rhythm_run, table, monkeypatch):
    tmp, uri, run, _ = rhythm_run
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--run", run.info.run_id, str(table), "--json"])
    assert res.exit_code == 0, res.output
    assert "aami_ec57" in json.loads(res.output[res.output.index("{") :])
    out = tmp / "pred.csv"
    res = runner.invoke(app, ["predict", "--run", run.info.run_id, str(table), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out)) == len(pd.read_parquet(table))
    assert_served_as_keras(uri, run.info.run_id, pd.read_parquet(table).head(8))
    # without its rhythm columns the table is refused in one line that names them
    bare = tmp / "bare.parquet"
    pd.read_parquet(table).drop(columns=["rr_pre_local"]).to_parquet(bare)
    res = runner.invoke(app, ["evaluate", "--run", run.info.run_id, str(bare)])
    assert res.exit_code == 2 and "rr_pre_local" in res.output and len(res.output.strip().splitlines()) == 1


def test_the_blended_model_answers_as_its_network_and_tree_together_and_is_not_exported(rhythm_run, table, tmp_path):
    from ecgvgg.core.inference import BASELINE_FILE, load_model

    tmp, uri, run, output = rhythm_run
    assert "VGG16 + gradient-boosted tree (blend 0.5) with record consensus 0.5 vs gradient-boosted tree:" in output
    assert "baseline_hgb_macro_f1" in run.data.metrics
    path = tmp / "mlruns" / "runs" / run.info.run_id / "model.keras"
    with zipfile.ZipFile(path) as z:
        assert BASELINE_FILE in z.namelist() and json.loads(z.read("ecgvgg.json"))["blend"] == 0.5
    loaded = load_model(path)
    beats = pd.read_parquet(table).sample(64, random_state=0)
    network = loaded.model.predict(loaded.prepare(beats), verbose=0)
    tree = np.zeros_like(network)
    for i, c in enumerate(loaded.baseline.classes_):  # a class the tree never saw keeps probability 0
        tree[:, loaded.classes.index(c)] = loaded.baseline.predict_proba(loaded.rows(beats))[:, i]
    by_hand = 0.5 * network + 0.5 * tree
    np.testing.assert_allclose(loaded.predict_proba(beats), by_hand, atol=1e-6)
    assert not np.allclose(by_hand, network, atol=1e-3)  # the tree changes the answer
    res = CliRunner().invoke(app, ["export", "--model", str(path), "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "baseline_blend 0.5" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_the_model_with_record_consensus_answers_per_record_when_given_the_records(rhythm_run, table, tmp_path):
    from dataclasses import replace

    from ecgvgg.core.annotate import label, open_recordings, plan_for
    from ecgvgg.core.consensus import record_consensus
    from ecgvgg.core.inference import load_model
    from ecgvgg.core.metrics import confusion
    from ecgvgg.core.rows import relative_rows

    tmp, uri, run, _ = rhythm_run
    path = tmp / "mlruns" / "runs" / run.info.run_id / "model.keras"
    loaded = load_model(path)
    assert loaded.contract.consensus == {"weight": 0.5, "clusters": 4}
    beats = pd.read_parquet(table)
    records = beats["record"].to_numpy()
    alone = loaded.predict_proba(beats)  # without the records: each beat alone, network and tree blended
    together = loaded.predict_proba(beats, groups=records)
    by_hand = record_consensus(alone, relative_rows(loaded.rows(beats), rhythm=len(RHYTHM)), records, 0.5, 4, rhythm=len(RHYTHM))
    np.testing.assert_allclose(together, by_hand, atol=1e-6)
    assert not np.allclose(together, alone, atol=1e-3)
    # predict reads the table's record column and answers as the run scored
    res = CliRunner().invoke(app, ["predict", "--model", str(path), str(table), "-o", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    written = pd.read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(written[[f"p_{n}" for n in loaded.class_names]].to_numpy(), together, atol=1e-5)
    res = CliRunner().invoke(app, ["evaluate", "--model", str(path), str(table), "--json"])
    assert res.exit_code == 0, res.output
    scored = json.loads(res.output[res.output.index("{") :])["confusion_matrix"]
    pred = np.asarray(loaded.classes)[together.argmax(axis=1)]
    assert scored == confusion(beats["label"].to_numpy(), pred, loaded.classes).tolist()  # evaluate scores the same
    # --consensus replaces the model's own: 0 answers beat by beat, another weight as record_consensus would
    res = CliRunner().invoke(
        app, ["predict", "--model", str(path), str(table), "-o", str(tmp_path / "p0.csv"), "--consensus", "0"]
    )
    assert res.exit_code == 0, res.output
    columns = [f"p_{n}" for n in loaded.class_names]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "p0.csv")[columns].to_numpy(), alone, atol=1e-5)
    res = CliRunner().invoke(app, ["evaluate", "--model", str(path), str(table), "--json", "--consensus", "0.9"])
    assert res.exit_code == 0, res.output
    stronger = record_consensus(alone, relative_rows(loaded.rows(beats), rhythm=len(RHYTHM)), records, 0.9, 4, rhythm=len(RHYTHM))
    assert not np.allclose(stronger, together, atol=1e-3)
    scored = json.loads(res.output[res.output.index("{") :])["confusion_matrix"]
    pred = np.asarray(loaded.classes)[stronger.argmax(axis=1)]
    assert scored == confusion(beats["label"].to_numpy(), pred, loaded.classes).tolist()
    # a weight asked for without the records: one line, exit 2, nothing written
    beats.drop(columns="record").to_parquet(tmp_path / "no_records.parquet")
    no_records = ["predict", "--model", str(path), str(tmp_path / "no_records.parquet"), "-o", str(tmp_path / "n.csv")]
    res = CliRunner().invoke(app, [*no_records, "--consensus", "0.5"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "--consensus needs each beat's record" in res.output and not (tmp_path / "n.csv").exists()
    # annotate labels a whole recording with its beats together: the record's answers draw closer
    rec = open_recordings([DATA / "records" / "209m8"])[0]
    plan = plan_for(rec, loaded.contract)
    plain = replace(loaded, contract=loaded.contract.with_consensus_weight(0))  # annotate --consensus 0
    assert plain.contract.consensus == {}
    assert loaded.contract.with_consensus_weight(0.3).consensus == {"weight": 0.3, "clusters": 4}
    p = [f"p_{n}" for n in loaded.class_names]
    with_consensus, without = label(rec, loaded, plan).beats[p].to_numpy(), label(rec, plain, plan).beats[p].to_numpy()
    assert with_consensus.var(axis=0).sum() < without.var(axis=0).sum()


def test_the_rhythm_model_fine_tunes_from_its_run(rhythm_run, table, monkeypatch):
    tmp, uri, run, _ = rhythm_run
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = CliRunner().invoke(
        app,
        [
            "run",
            CV,
            *_sets(f"data.path={table}", f"model.weights=run:{run.info.run_id}", "model.frozen_blocks=3", "training.epochs=2"),
        ],
    )
    assert res.exit_code in RAN, res.output  # two epochs from a trained network: the wiring is what counts
    assert len(runs_in(uri)) == 2


def test_a_table_without_the_rhythm_columns_is_refused_before_any_run(tmp_path_factory, table):
    bare = table.parent / "no_rhythm.parquet"
    pd.read_parquet(table).drop(columns=["rr_pre_rel", "rr_post_rel"]).to_parquet(bare)
    tmp, uri, res = invoke_in_new_store(tmp_path_factory, "no_rhythm", ["run", CV, *_sets(f"data.path={bare}")])
    assert res.exit_code == 2
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and "rr_pre_rel, rr_post_rel" in line and "data.rhythm_columns" in line
    assert not (tmp / "mlruns" / "mlflow.db").exists() or not runs_in(uri)


def test_extra_training_tables_train_only_and_must_match(tmp_path_factory, table):
    beats = pd.read_parquet(table)
    extra = table.parent / "extra.parquet"
    beats.assign(record="x" + beats["record"]).to_parquet(extra)
    wrong = table.parent / "wrong.parquet"
    beats.drop(columns=["x5"]).to_parquet(wrong)
    _, _, res = invoke_in_new_store(
        tmp_path_factory, "extra_bad", ["run", CV, *_sets(f"data.path={table}", f"data.extra_train=[{wrong}]")]
    )
    assert res.exit_code == 2 and "wrong.parquet" in res.output
    from ecgvgg.core.config import load_config
    from ecgvgg.core.dataset import load
    from ecgvgg.core.folds import plan

    cfg = load_config(CV, [*TINY, f"data.path={table}", f"data.extra_train=[{extra}]"])
    data = load(cfg)
    assert data.train_only == len(beats) and len(data.y) == 2 * len(beats)
    folds = plan(cfg, data.y, data.groups, data.train_only)
    assert len(folds) == 1  # a single split here (split.folds: null)
    for fold in folds:  # the extra rows train in every fold and are never held out
        assert set(range(len(beats), 2 * len(beats))) <= set(fold.train.tolist())
        assert not any(str(g).startswith("x") for g in data.groups[np.r_[fold.val, fold.test]])


def test_beat_scaling_makes_records_of_other_gains_alike():
    rec = wfdb.rdrecord(str(DATA / "records" / "208m0"))
    ann = wfdb.rdann(str(DATA / "records" / "208m0"), "atr")
    signal = rec.p_signal[:, 0]
    for scale in ("record", "window"):
        a = beats_from_signal(signal, rec.fs, ann.sample, ann.symbol, method="window", scale=scale)[0]
        b = beats_from_signal(3.0 * signal + 0.5, rec.fs, ann.sample, ann.symbol, method="window", scale=scale)[0]
        np.testing.assert_allclose(a, b, atol=1e-4)  # gain and offset are gone
    from ecgvgg.core.records import scale_to_r_peaks, scale_windows

    x = scale_windows(signal, rec.fs)
    step = int(10 * rec.fs)
    assert all(x[i : i + step].min() == 0 and x[i : i + step].max() == pytest.approx(1) for i in range(0, len(x), step))
    peaks = ann.sample[[s == "N" for s in ann.symbol]]
    assert np.median(np.abs(scale_to_r_peaks(signal, ann.sample)[peaks])) == pytest.approx(1, rel=0.2)


def test_cross_validation_and_its_fold_ensemble_read_rhythm(tmp_path_factory, table):
    from ecgvgg.core.inference import load_model

    tmp, uri, res = invoke_in_new_store(
        tmp_path_factory, "rhythm_cv", ["run", CV, *_sets(f"data.path={table}", "split.folds=2", "training.epochs=3")]
    )
    assert res.exit_code in RAN, res.output  # three epochs per fold: the wiring is what counts here
    assert "out-of-fold, pooled (AAMI EC57)" in res.output and "jκ index" in res.output
    parent = next(r for r in runs_in(uri) if r.data.tags.get("cv") == "true")
    assert "oof_jk" in parent.data.metrics and "oof_se_S" in parent.data.metrics
    ensemble = load_model(tmp / "mlruns" / "runs" / parent.info.run_id / "model.keras")
    assert ensemble.data["rhythm_columns"] == RHYTHM
    probs = ensemble.predict_proba(pd.read_parquet(table).head(10))
    assert probs.shape == (10, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_the_aami_table_shows_kappa_in_its_own_row_not_as_a_false_positive_rate():
    from rich.console import Console

    from ecgvgg.core.metrics import scores_from_confusion
    from ecgvgg.cli.report import scores_table

    m = np.array([[90, 5, 5], [2, 8, 0], [1, 0, 9]])
    scores = {**scores_from_confusion(m, range(3)), "confusion_matrix": m.tolist()}
    console = Console(width=120, record=True)
    console.print(scores_table(scores, ["N", "S", "V"], "t"))
    lines = console.export_text().splitlines()
    kappa = jk_index(m, ["N", "S", "V"])["kappa"]
    row = next(ln for ln in lines if "Cohen's κ" in ln)
    assert f"{kappa:.3f}" in row and not any("κ 0" in ln or "κ -" in ln for ln in lines)

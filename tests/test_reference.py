"""The patient's reference beat and both leads: prepare's columns, the several-channel network end to end."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import DATA, RAN, ROOT, TINY_RECORDS, assert_served_as_keras, invoke_in_new_store, runs_in, sets, write_record
from ecgvgg.cli.main import app
from ecgvgg.core.records import pick_leads, prepare_records, reference_beats

wfdb = pytest.importorskip("wfdb")
CV = str(ROOT / "pipelines" / "interpatient_cv.yaml")
CHANNELS = "data.channels=[x,x2_,ref,ref2_]"
TINY = ["training.epochs=5", *TINY_RECORDS, "tracking.gradcam_per_class=4"]
WINDOW = dict(method="window", before=0.25, after=0.4, scale="window")


def _sets(*items: str) -> list[str]:
    return sets(*TINY, *items)


@pytest.fixture(scope="module")
def two_leads(tmp_path_factory) -> Path:
    """The two shipped record cuts, both leads, each beat with its record's median beat."""
    beats, report = prepare_records(DATA / "records", leads=["MLII", "V1"], reference="record", **WINDOW)
    assert report.leads == {"208m0": ["MLII", "V1"], "209m8": ["MLII", "V1"]}
    path = tmp_path_factory.mktemp("reference") / "beats.parquet"
    beats.to_parquet(path, index=False)
    return path


def test_reference_beats_by_hand_and_the_causal_one_uses_no_later_beat():
    beats = np.array([[0, 1], [2, 3], [4, 9], [6, 5], [8, 7]], dtype=np.float32)
    peaks = np.array([0, 10, 20, 30, 40])  # at 1 Hz: 0, 10, 20, 30, 40 s
    record = reference_beats(beats, peaks, 1.0, "record")
    assert record.tolist() == [[4, 5]] * 5  # the per-sample median of all five
    # blocks of 15 s over a 20 s past: [0, 15) has no past, [15, 30) sees 0-10 s, [30, 45) sees 10-20 s
    causal = reference_beats(beats, peaks, 1.0, "causal", window_s=20, update_s=15)
    assert causal.tolist() == [[0, 1], [0, 1], [1, 2], [3, 6], [3, 6]]
    later = beats.copy()
    later[3:] += 100  # changing later beats changes no earlier reference
    assert (reference_beats(later, peaks, 1.0, "causal", window_s=20, update_s=15)[:3] == causal[:3]).all()
    with pytest.raises(ValueError, match="causal"):
        reference_beats(beats, peaks, 1.0, "future")


def test_prepare_writes_two_leads_and_their_references(two_leads):
    beats = pd.read_parquet(two_leads)
    n = 81  # 0.25 s + 0.4 s at 125 Hz
    for prefix in ("x", "x2_", "ref", "ref2_"):
        assert [f"{prefix}{i}" for i in range(n)] == [
            c for c in beats.columns if c.startswith(prefix) and c[len(prefix) :].isdigit()
        ]
    for record, part in beats.groupby("record"):
        x = part[[f"x{i}" for i in range(n)]].to_numpy()
        np.testing.assert_allclose(part[[f"ref{i}" for i in range(n)]].to_numpy()[0], np.median(x, axis=0), atol=1e-6)
        assert part[[f"ref2_{i}" for i in range(n)]].nunique().max() == 1  # one reference per record
    assert not np.allclose(beats["x10"], beats["x2_10"])  # two different leads


def test_a_record_without_the_lead_takes_its_stand_in(tmp_path):
    rec = wfdb.rdrecord(str(DATA / "records" / "209m8"))
    ann = wfdb.rdann(str(DATA / "records" / "209m8"), "atr")
    # the upper signal V5 and the lower MLII, as in MIT-BIH record 114
    wfdb.wrsamp(
        "914",
        fs=rec.fs,
        units=["mV", "mV"],
        sig_name=["V5", "MLII"],
        p_signal=rec.p_signal[:, ::-1].copy(),
        fmt=["212", "212"],
        write_dir=str(tmp_path),
    )
    wfdb.wrann("914", "atr", ann.sample, symbol=ann.symbol, write_dir=str(tmp_path))
    beats, report = prepare_records(tmp_path, leads=["MLII", "V1"], **WINDOW)
    assert report.leads == {"914": ["MLII", "V5"]}
    mine, _ = prepare_records(DATA / "records", leads=["MLII", "V1"], **WINDOW)
    same = mine[mine["record"] == "209m8"].reset_index(drop=True)
    np.testing.assert_allclose(beats["x20"], same["x20"], atol=2e-3)  # MLII found in the lower signal
    assert pick_leads(["ECG1", "ECG2"], ["MLII", "V1"]) == [0, 1]  # SVDB's names
    with pytest.raises(ValueError, match="2 leads wanted"):
        pick_leads(["MLII"], ["MLII", "V1"])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, two_leads):
    """A tiny four-channel network (two leads, two references) trained on the two real record cuts, beside a
    record head behind gradient reversal (which the saved model leaves out)."""
    tmp, uri, res = invoke_in_new_store(
        tmp_path_factory,
        "reference_run",
        [
            "run",
            CV,
            *_sets(f"data.path={two_leads}", CHANNELS, "training.class_weight=records", "training.subject_adversary=0.1"),
        ],
    )
    assert res.exit_code in RAN, res.output  # a few epochs: the wiring is what counts here
    return tmp, uri, runs_in(uri)[0], res.output


def test_the_reference_model_reads_four_channels_and_its_differences(reference_run, two_leads):
    from ecgvgg.core.inference import load_model

    tmp, _, run, output = reference_run
    path = tmp / "mlruns" / "runs" / run.info.run_id / "model.keras"
    with zipfile.ZipFile(path) as z:
        contract = json.loads(z.read("ecgvgg.json"))
    assert contract["data"]["channels"] == ["x", "x2_", "ref", "ref2_"] and contract["length"] == 4 * 81 + 7
    loaded = load_model(path)
    assert loaded.model.get_layer("beat_minus_reference").output.shape[1:] == (2, 81)
    assert loaded.model.get_layer("samples_by_channel").output.shape[1:] == (81, 6)
    beats = pd.read_parquet(two_leads).head(32)
    rows = loaded.prepare(beats)
    moved = rows.copy()
    moved[:, 2 * 81 : 4 * 81] += 0.5  # another reference beat changes the answer: the channels are wired in
    assert not np.allclose(loaded.model.predict(rows, verbose=0), loaded.model.predict(moved, verbose=0))


def test_reference_model_evaluates_predicts_serves_exports_and_explains(reference_run, two_leads, monkeypatch):
    tmp, uri, run, _ = reference_run
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--run", run.info.run_id, str(two_leads), "--json"])
    assert res.exit_code == 0, res.output
    assert_served_as_keras(uri, run.info.run_id, pd.read_parquet(two_leads).head(8))
    res = runner.invoke(app, ["export", "--run", run.info.run_id, "--format", "onnx", "-o", str(tmp / "m.onnx")])
    assert res.exit_code == 0 and (tmp / "m.onnx").exists(), res.output
    res = runner.invoke(app, ["explain", str(two_leads), "--run", run.info.run_id, "-o", str(tmp / "why"), "--per-class", "2"])
    assert res.exit_code == 0, res.output
    assert any(p.suffix == ".png" for p in (tmp / "why").iterdir())
    # a table of one lead given to the two-lead model: one line naming the missing channel
    one, _ = prepare_records(DATA / "records", leads=["MLII"], reference="record", **WINDOW)
    one.to_parquet(tmp / "one_lead.parquet")
    res = runner.invoke(app, ["evaluate", "--run", run.info.run_id, str(tmp / "one_lead.parquet")])
    assert res.exit_code == 2 and "x2_0" in res.output and len(res.output.strip().splitlines()) == 1, res.output
    # and a recording of one lead given to it to label: one line, nothing written
    rec = wfdb.rdrecord(str(DATA / "records" / "209m8"))
    one_lead = write_record(tmp, "one", rec.p_signal[:, :1].astype(np.float64), rec.fs, ("MLII",))
    model = tmp / "mlruns" / "runs" / run.info.run_id / "model.keras"
    res = runner.invoke(app, ["annotate", str(one_lead), "--model", str(model), "-o", str(tmp / "labels")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "1 lead(s) (MLII), the model reads 2 (MLII, V1)" in res.output and not (tmp / "labels").exists()


def test_a_table_without_reference_columns_is_refused_before_any_run(tmp_path_factory, two_leads):
    bare = two_leads.parent / "no_reference.parquet"
    table = pd.read_parquet(two_leads)
    table.drop(columns=[c for c in table.columns if c.startswith("ref2_")]).to_parquet(bare)
    tmp, uri, res = invoke_in_new_store(tmp_path_factory, "no_reference", ["run", CV, *_sets(f"data.path={bare}", CHANNELS)])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and "ref2_0" in line and "data.channels" in line
    assert not (tmp / "mlruns" / "mlflow.db").exists() or not runs_in(uri)


def test_channels_must_list_beats_then_their_references():
    from ecgvgg.core.config import load_config
    from ecgvgg.core.errors import ConfigError

    with pytest.raises(ConfigError, match="data.channels"):
        load_config(CV, ["data.channels=[ref,x]"])
    with pytest.raises(ConfigError, match="data.channels"):
        load_config(CV, ["data.channels=[x,ref,ref2_]"])


def test_weights_by_records_shrink_a_class_seen_in_one_record():
    from ecgvgg.core.class_weights import effective_records, records_class_weight, rows_class_weight

    y = np.r_[np.zeros(400, int), np.ones(40, int), np.full(40, 2)]
    groups = np.r_[np.repeat(["a", "b", "c", "d"], 100), np.repeat(["a", "b", "c", "d"], 10), np.full(40, "a")]
    eff = effective_records(y, groups, [0, 1, 2])
    assert eff[0] == pytest.approx(4) and eff[1] == pytest.approx(4) and eff[2] == pytest.approx(1)
    w = records_class_weight({0: 400, 1: 40, 2: 40}, eff)
    assert w[1] == pytest.approx(480 / (3 * 40)) and w[2] == pytest.approx(w[1] / 4)
    tree = rows_class_weight("records", y, groups, [0, 1, 2], cap=2.0)  # the baseline's: the same, capped
    assert tree == pytest.approx({0: w[0], 1: 2.0, 2: w[2]})
    assert rows_class_weight("balanced", y, None, [0, 1, 2]) == pytest.approx({0: 0.4, 1: 4.0, 2: 4.0})


def test_the_boosted_tree_weighs_the_classes_as_the_network_does(two_leads):
    from ecgvgg.core.class_weights import balanced_class_weight
    from ecgvgg.core.config import load_config
    from ecgvgg.core.dataset import load
    from ecgvgg.core.study import fit_baseline

    cfg = load_config(CV, [f"data.path={two_leads}", CHANNELS, "training.class_weight=records"])
    data = load(cfg)
    assert fit_baseline(cfg, data, np.arange(len(data.y))).class_weight == "balanced"  # the default
    cfg = load_config(CV, [f"data.path={two_leads}", CHANNELS, "training.class_weight=records", "baseline_class_weight=training"])
    tree = fit_baseline(cfg, data, np.arange(len(data.y)))
    counts = dict(zip(*np.unique(data.y, return_counts=True)))
    balanced = balanced_class_weight(counts)
    # F beats come from record 208 alone, normal beats from both records: F loses weight, N keeps it
    f, n = cfg.data.class_names.index("F"), cfg.data.class_names.index("N")
    assert tree.class_weight[n] == pytest.approx(balanced[n])
    assert tree.class_weight[f] < 0.8 * min(balanced[f], cfg.training.max_class_weight)


def test_the_boosted_tree_reads_rhythm_beats_and_differences():
    from ecgvgg.core.baselines import ReferenceBoostedTree, reference_features

    rows = np.array([[1, 2, 0.5, 0.5, 0.9]], dtype=np.float32)  # beat (2), reference (2), one rhythm value
    features = reference_features(rows, channels=2, references=1, rhythm=1)  # rhythm, beat, beat - reference, measures
    assert features[:, :5] == pytest.approx(np.array([[0.9, 1, 2, 0.5, 1.5]])) and features.shape == (1, 13)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    y = (X[:, 0] - X[:, 2] > 0).astype(int)  # the class is the beat minus its reference
    tree = ReferenceBoostedTree(channels=2, references=1, rhythm=1).fit(X[:150], y[:150])
    assert (tree.predict(X[150:]) == y[150:]).mean() > 0.85
    probs = tree.predict_proba(X[150:])
    assert probs.shape == (50, 2) and probs.sum(axis=1) == pytest.approx(np.ones(50))
    np.testing.assert_array_equal(tree.classes_[probs.argmax(axis=1)], tree.predict(X[150:]))


def test_the_template_measures_tell_a_beat_like_its_reference_from_a_wide_inverted_one():
    from ecgvgg.core.baselines import template_measures

    t = np.linspace(-1, 1, 80)
    ref = np.exp(-((t / 0.05) ** 2))[None, :]  # a narrow QRS
    same, wide_inverted = ref.copy(), -np.exp(-((t / 0.2) ** 2))[None, :]
    m = template_measures(np.vstack([same, wide_inverted]), np.vstack([ref, ref]))
    corr, corr_qrs, rms, peak, length, length_qrs, amplitude, width = m.T
    assert corr[0] == pytest.approx(1) and corr_qrs[0] == pytest.approx(1) and corr[1] < 0 and corr_qrs[1] < 0
    assert rms[0] == pytest.approx(0, abs=1e-5) and peak[0] == pytest.approx(0, abs=1e-5) and rms[1] > 1 and peak[1] > 1
    assert length[0] == pytest.approx(1, rel=1e-4) and amplitude[0] == pytest.approx(1, rel=1e-4)
    assert width[1] > 2 * width[0]


def test_the_prior_shift_weighs_each_class_by_its_share():
    import keras

    from ecgvgg.core.models import vgg16
    from ecgvgg.core.training import shift_to_prior

    model = vgg16((16, 1), 3, width=0.0625, dense_units=4)
    rows = np.random.default_rng(0).normal(size=(32, 16, 1)).astype(np.float32)
    before = np.asarray(model.predict(rows, verbose=0), np.float64)
    shift_to_prior(model, {0: 800, 1: 150, 2: 50}, 0.5, [0, 1, 2])
    after = np.asarray(model.predict(rows, verbose=0), np.float64)
    weighted = before * np.array([0.8, 0.15, 0.05]) ** 0.5
    np.testing.assert_allclose(after, weighted / weighted.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    assert isinstance(model, keras.Model)

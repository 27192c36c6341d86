"""Hostile input: every bad config, file or path exits 2 in one line before any run exists; resume
and model files cannot go wrong silently."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import invoke_in_new_store, new_store, RAN, ROOT, runner as make_runner, runs_in, SAMPLE, SEED, sets, TINY
from ecgvgg.cli.main import app

LOCAL = [*TINY, "baseline=none"]
runner = make_runner()


def _sets(*items: str) -> list[str]:
    return sets(*LOCAL, *items)


_runs = runs_in


def _one_line_error(res, needle: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    text = " ".join(res.output.split())
    assert needle in text, res.output
    assert lines[0].startswith("error:") and "Traceback" not in res.output
    assert len(lines) <= 3, res.output  # one message, soft-wrapped at most


@pytest.fixture(scope="module")
def files(tmp_path_factory, sample_frame):
    """Hostile files made from the bundled real beats."""
    d = tmp_path_factory.mktemp("hostile")
    sample_frame[sample_frame["label"] != 3].to_parquet(d / "no_F.parquet")
    (d / "latin1.yaml").write_bytes("data:\n  path: caf\xe9.csv\n".encode("latin-1"))
    (d / "broken.yaml").write_text("data:\n  path: x.csv\n  label_column: [unclosed\n")
    (d / "extends_map.yaml").write_text("extends: {piece: data.yaml}\ndata:\n  path: x.csv\n")
    (d / "beats.csv.gz").write_bytes(gzip.compress(sample_frame.drop(columns="segment").to_csv(index=False).encode()))
    huge = sample_frame.drop(columns="segment").astype({"x3": "float64"})
    huge.loc[5, "x3"] = 1e300
    huge.to_csv(d / "huge.csv", index=False)
    headerless = sample_frame.drop(columns="segment")
    headerless.to_csv(d / "kaggle.csv", index=False, header=False)
    (d / "[train]").mkdir()
    return d


HOSTILE = [
    (lambda d: _sets("training.class_weight={0: 1, 1: 2, 7: 3}"), "training.class_weight: the keys must be the classes"),
    (lambda d: _sets("model.weights=nowhere/weights.keras"), "model.weights: no such weights file"),
    (lambda d: _sets(f"data.path={d / 'no_F.parquet'}"), "data.class_names has class(es) F (3) with no rows"),
    (lambda d: _sets("resampling.params={n_neighbors: -1}"), "The 'n_neighbors' parameter of ADASYN must be"),
    (
        lambda d: _sets("resampling.params={sampling_strategy: {9: 2000}}"),
        "resampling.params.sampling_strategy: {9: 2000} does not fit the data",
    ),
    (lambda d: _sets("input.kind=2d", "input.size=5"), "input.size: 5 is too small to fold 187 samples"),
    (lambda d: _sets("input.kind=2d", "input.method=gaf", "input.size=400"), "input.size: 400 does not fit"),
    (lambda d: _sets("split.folds=400"), "400 folds need at least 400 groups"),
    (lambda d: _sets("training.augment_shift=120"), "training.augment_shift: 120 samples is half or more"),
    (lambda d: _sets("training.class_weight={0: [1"), "--set training.class_weight={0: [1: not valid YAML"),
    (
        lambda d: _sets(f"data.path={d / 'beats.csv.gz'}", "data.format=csv", "data.group_column=null"),
        "beats.csv.gz: not UTF-8 text",
    ),
    (
        lambda d: _sets(f"data.path={d / 'huge.csv'}", "data.group_column=null"),
        "column 'x3' has 1e+300 at line 7, beyond the float32 range",
    ),
    (lambda d: _sets(f"data.path={d / 'kaggle.csv'}", "data.header=false"), "or to null to split by beat"),
    (lambda d: _sets(f"data.path={d / '[train]' / 'b.csv'}"), "[train]/b.csv: no such file"),
    (lambda d: _sets(f"data.path={d / '[' / 'x]' / ':x:.csv'}"), "[/x]/:x:.csv: no such file"),
    (lambda d: ["--workers", "2", *_sets("split.folds=3")], "--workers / TF_CONFIG: several workers train one split"),
    (
        lambda d: ["--workers", "2", *_sets("resampling.sampler=smote", "data.path=nowhere.parquet")],
        "nowhere.parquet: no such file",
    ),  # checked once, before any worker starts
]


@pytest.mark.parametrize(("make", "needle"), HOSTILE, ids=[n[:30] for _, n in HOSTILE])
def test_settings_that_would_fail_late_exit_2_in_one_line_before_any_run(store, files, make, needle):
    res = runner.invoke(app, ["run", SEED, *make(files)])
    _one_line_error(res, needle)
    assert _runs(store) == []


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("latin1.yaml", "latin1.yaml: not UTF-8 text"),
        ("broken.yaml", "broken.yaml: not valid YAML at line 4"),
        ("extends_map.yaml", "extends: expected a list of YAML file paths"),
    ],
)
def test_config_files_that_cannot_be_read_exit_2(store, files, name, needle):
    _one_line_error(runner.invoke(app, ["run", str(files / name)]), needle)


def test_a_sweep_whose_grid_makes_a_bad_config_or_bad_data_leaves_no_parent(store, files):
    res = runner.invoke(app, ["sweep", SEED, "--grid", "input.size=5,14", *_sets("input.kind=2d")])
    _one_line_error(res, "--grid input.size=5: input.size: 5 is too small")
    res = runner.invoke(app, ["sweep", SEED, "--grid", f"data.path={SAMPLE},{files / 'no_F.parquet'}", *_sets()])
    _one_line_error(res, "with no rows")
    res = runner.invoke(app, ["sweep", SEED, "--grid", "training.batch_size=[1", *_sets()])
    _one_line_error(res, "not valid YAML")
    assert _runs(store) == []


def test_a_bad_input_is_one_line_on_the_real_terminal_without_tensorflow_chatter(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns/mlflow.db"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ecgvgg.cli.main", "run", SEED, "--set", "data.path=missing.csv"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.csv: no such file" in lines[0], lines
    assert not (tmp_path / "mlruns").exists()


def test_interrupt_before_any_run_does_not_claim_a_run_was_killed(capsys):
    from typer import Exit

    from ecgvgg.cli.exits import Terminated, guard

    with pytest.raises(Exit) as stop:
        with guard():
            raise Terminated()
    assert stop.value.exit_code == 143
    err = capsys.readouterr().err
    assert "before any run was created" in err and "KILLED" not in err


def test_an_unreadable_data_file_is_bad_input(tmp_path):
    from ecgvgg.core.data import load_xy
    from ecgvgg.core.errors import DataError

    folder_like = tmp_path / "beats.csv"
    folder_like.write_text("1,2,0\n")
    os.chmod(folder_like, 0)
    try:
        if os.access(folder_like, os.R_OK):  # root reads anything: use a path through a file instead
            folder_like = tmp_path / "beats.csv" / "inner.csv"
        with pytest.raises(DataError, match="beats.csv"):
            load_xy(folder_like)
    finally:
        os.chmod(tmp_path / "beats.csv", 0o644)


def test_predict_refuses_outputs_it_cannot_write_before_any_work(files, tmp_path):
    model = ROOT / "nowhere.keras"  # never reached: the output is checked first
    for out, needle in (
        (files, "is a folder"),
        (SAMPLE.with_suffix(".parquet"), "is the input file"),
        (SAMPLE / "p.csv", "cannot write in"),
        (tmp_path / "p.txt", "use a .csv"),
    ):
        res = runner.invoke(app, ["predict", "--model", str(model), str(SAMPLE), "-o", str(out)])
        _one_line_error(res, needle)
    assert not list(tmp_path.glob("*.part"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny finished run of the seed pipeline (store, run id, run folder)."""
    tmp, uri, res = invoke_in_new_store(tmp_path_factory, "trained", ["run", SEED, *_sets("training.epochs=2")])
    assert res.exit_code in RAN, res.output
    run_id = _runs(uri)[0].info.run_id
    return tmp, uri, run_id, tmp / "mlruns" / "runs" / run_id


def test_the_input_contract_travels_inside_the_model_file(trained, tmp_path):
    import shutil

    from ecgvgg.core.inference import load_model, read_contract

    _, _, _, run_dir = trained
    alone = tmp_path / "alone.keras"
    shutil.copy(run_dir / "model.keras", alone)  # no ecgvgg.json beside it
    contract = read_contract(alone)
    assert contract.length == 187 and contract.input["kind"] == "1d"
    data = dict(contract.data)
    seen = set(data.pop("train_groups"))  # the segments of its training and validation rows, not its test rows
    made = data.pop("beat_format")  # the training beats' format: lowest, highest, mean sample, zero share
    assert len(made["mean"]) == len(made["std"]) == 4 and 0 <= made["mean"][0] < made["mean"][1] <= 1
    assert data == {
        "label_column": "label",
        "group_column": "segment",
        "header": "auto",
        "features": [f"x{i}" for i in range(187)],
        "rhythm_columns": [],
    }
    segments = set(pd.read_parquet(SAMPLE)["segment"])
    assert seen < segments and len(seen) > len(segments) / 2
    # the training table's text group column is found without --group-column
    res = runner.invoke(app, ["evaluate", "--model", str(alone), str(SAMPLE), "--json"])
    assert res.exit_code == 0, res.output
    assert load_model(run_dir).source.endswith("model.keras")  # a run folder gives the final model, not best.keras
    import keras

    bare = tmp_path / "bare.keras"
    keras.saving.load_model(alone, compile=False).save(bare)
    _one_line_error(runner.invoke(app, ["evaluate", "--model", str(bare), str(SAMPLE)]), "no ecgvgg input contract")


def test_evaluate_run_from_another_folder_names_the_store_and_creates_none(trained, tmp_path, monkeypatch):
    _, uri, run_id, _ = trained
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = runner.invoke(app, ["evaluate", "--run", run_id, str(SAMPLE)])
    _one_line_error(res, f"no MLflow store at {tmp_path / 'mlruns' / 'mlflow.db'}")
    assert not (tmp_path / "mlruns").exists()
    res = runner.invoke(app, ["evaluate", "--run", run_id, "--tracking-uri", uri, str(SAMPLE), "--json"])
    assert res.exit_code == 0, res.output


def test_a_damaged_checkpoint_is_refused_before_the_run_is_reopened(trained, monkeypatch):
    tmp, uri, run_id, run_dir = trained
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    client.set_terminated(run_id, status="KILLED")
    good = (run_dir / "best.keras").read_bytes()
    (run_dir / "best.keras").write_bytes(good[: len(good) // 2])
    try:
        res = runner.invoke(app, ["run", SEED, *_sets("training.epochs=3"), "--resume", run_id])
        _one_line_error(res, f"the checkpoint {run_dir / 'best.keras'} is damaged")
        assert client.get_run(run_id).info.status == "KILLED"
    finally:
        (run_dir / "best.keras").write_bytes(good)
        client.set_terminated(run_id, status="FINISHED")


def test_resume_returns_the_best_model_of_the_whole_run(sample_xyg, tmp_path):
    import keras

    from ecgvgg.core.models import vgg16
    from ecgvgg.core.folds import split_then_oversample
    from ecgvgg.core.shapes import to_1d
    from ecgvgg.core.config import TrainingConfig
    from ecgvgg.core.training import fit, setup_device

    X, y, g = sample_xyg
    splits = split_then_oversample(X, y, groups=g, sampler="random", seed=0).map_x(to_1d)
    setup_device(seed=0, mixed_precision=False)
    ckpt = tmp_path / "best.keras"
    training = TrainingConfig(epochs=2, batch_size=128, early_stopping_patience=5, reduce_lr_patience=0)
    first = fit(vgg16(width=0.0625, dense_units=16), splits, training, checkpoint_path=ckpt)
    saved = keras.saving.load_model(ckpt)
    # pretend the epochs before the interruption reached a score nothing later can beat
    resumed = fit(
        saved,
        splits,
        training.model_copy(update={"epochs": 4}),
        checkpoint_path=ckpt,
        compile_model=False,
        initial_epoch=2,
        initial_best=1.01,
        initial_best_epoch=1,
    )
    assert resumed.best_epoch == 1 and first.epochs_run == 2
    expected = keras.saving.load_model(ckpt).get_weights()
    for a, b in zip(resumed.model.get_weights(), expected):
        np.testing.assert_array_equal(a, b)


def _cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "ecgvgg.cli.main", "run", SEED, *_sets(*extra)]


def test_a_live_run_cannot_be_resumed_and_a_killed_one_is_found_closed_and_resumed(tmp_path, monkeypatch):
    uri = new_store(tmp_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        _cmd("training.epochs=500"), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((tmp_path / "mlruns" / "runs").glob("*/best.keras")):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        (run,) = _runs(uri)
        run_id = run.info.run_id
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        live = runner.invoke(app, ["run", SEED, *_sets("training.epochs=500"), "--resume", run_id])
        _one_line_error(live, f"run {run_id} is still being trained by live process {proc.pid}")
        assert run_id not in runner.invoke(app, ["runs", "--stale"]).output
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert _runs(uri)[0].info.status == "RUNNING"  # what SIGKILL leaves behind
    listed = runner.invoke(app, ["runs", "--stale"])
    assert listed.exit_code == 0 and run_id[:8] in listed.output and "STALE" in listed.output
    closed = runner.invoke(app, ["runs", "--close-stale"])
    assert closed.exit_code == 0 and "marked 1 stale run(s) KILLED" in closed.output
    assert _runs(uri)[0].info.status == "KILLED"
    done = max(h.step for h in MlflowClient(uri).get_metric_history(run_id, "val_macro_f1"))
    resumed = runner.invoke(app, ["run", SEED, *_sets(f"training.epochs={done + 2}"), "--resume", run_id])
    assert resumed.exit_code in RAN, resumed.output
    (after,) = _runs(uri)
    assert after.info.run_id == run_id and after.info.status == "FINISHED" and "ecgvgg.status" not in after.data.tags
    steps = sorted(h.step for h in MlflowClient(uri).get_metric_history(run_id, "val_macro_f1"))
    assert steps[-1] == done + 2 and steps[:done] == list(range(1, done + 1))  # it continued, it did not restart
    assert "test_macro_f1" in after.data.metrics


def test_the_kaggle_pipeline_runs_a_headerless_csv_ungrouped(store, files):
    kaggle = str(ROOT / "pipelines" / "kaggle_vgg.yaml")
    res = runner.invoke(app, ["run", kaggle, *_sets("training.epochs=1", f"data.path={files / 'kaggle.csv'}")])
    assert res.exit_code in RAN, res.output
    (run,) = _runs(store)
    assert run.data.tags["split_kind"] == "ungrouped beats" and run.data.params["data.header"] == "False"
    assert sum(int(run.data.params[f"count_all_{c}"]) for c in "NSVFQ") == len(pd.read_csv(files / "kaggle.csv", header=None))

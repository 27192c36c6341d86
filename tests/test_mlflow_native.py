"""MLflow-native runs: a pyfunc model that takes beats as a table (in-process and served over REST),
readable run names, the dataset input, pictures, and the ``ecgvgg runs`` table."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import invoke_in_new_store, RAN, runner as make_runner, runs_in, SAMPLE, SEED, sets, TINY
from ecgvgg.cli.main import app

LOCAL = [*TINY, "training.epochs=2"]
runner = make_runner()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A tiny sweep over 1D and folded 2D input: one parent, two children with their models."""
    grid = ["--grid", "input.kind=1d,2d"]
    tmp, uri, res = invoke_in_new_store(tmp_path_factory, "sweep", ["sweep", SEED, *grid, *sets(*LOCAL, "baseline=rf")])
    assert res.exit_code in RAN, res.output
    runs = runs_in(uri)
    children = {r.data.tags["input"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return tmp, uri, res, runs, children


def _beats(n: int = 6) -> pd.DataFrame:
    return pd.read_parquet(SAMPLE).head(n)


def test_runs_have_readable_unique_names_a_description_and_epoch_lines(sweep):
    _, _, res, runs, children = sweep
    names = [r.info.run_name for r in runs]
    assert len(set(names)) == len(names) == 3
    assert children["1d"].info.run_name.startswith("adasyn-vgg16_1d-w0.0625-")
    assert children["2d-fold"].info.run_name.startswith("adasyn-vgg16_2d-fold-w0.0625-")
    note = children["1d"].data.tags["mlflow.note.content"]
    assert "Test macro-F1" in note and "95% bootstrap interval" in note and "Recall: N" in note
    assert "VGG16 vs random forest" in note and ("collapsed" in note.lower())
    assert "epoch 2/2: loss" in res.output  # no terminal: one line per epoch
    assert "trained 2 epochs" in res.output


def test_runs_log_the_dataset_versions_sizes_time_and_pictures(sweep):
    _, uri, _, _, children = sweep
    run = children["1d"]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == SAMPLE.name and dataset_input.dataset.digest
    assert SAMPLE.name in dataset_input.dataset.source
    tags, m = run.data.tags, run.data.metrics
    assert tags["tensorflow.version"] and tags["keras.version"] and tags["ecgvgg.version"]
    assert m["params_total"] == m["params_trainable"] + m["params_non_trainable"] > 0 and m["training_seconds"] > 0
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
    assert {"training_curves.png", "val_confusion_matrix.png", "test_confusion_matrix.png"} <= artifacts
    mlflow.set_tracking_uri(uri)  # MLflow finds a logged model through its process-wide store
    requirements = Path(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model/requirements.txt", tracking_uri=uri)
    ).read_text()
    assert "tensorflow==" in requirements and "keras==" in requirements


@pytest.mark.parametrize("kind", ["1d", "2d-fold"])
def test_the_logged_model_is_a_pyfunc_that_takes_beats_as_a_table(sweep, kind):
    from ecgvgg.tracking.store import load_run_model

    _, uri, _, _, children = sweep
    run_id = children[kind].info.run_id
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    schema = model.metadata.signature
    assert schema.inputs.input_names()[:2] == ["x0", "x1"] and len(schema.inputs.input_names()) == 187
    assert schema.outputs.input_names() == ["prediction", "class_name", "p_N", "p_S", "p_V", "p_F", "p_Q"]
    beats = _beats()
    out = model.predict(beats.filter(like="x"))
    assert list(out["class_name"]) == [list("NSVFQ")[p] for p in out["prediction"]]
    keras_side = load_run_model(uri, run_id).predict_frame(beats)  # Keras users get the same answers
    pd.testing.assert_frame_equal(out.reset_index(drop=True), keras_side, check_dtype=False, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["1d", "2d-fold"])
def test_mlflow_models_serve_answers_beats_with_class_names(sweep, kind):
    _, uri, _, _, children = sweep
    run_id = children[kind].info.run_id
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"runs:/{run_id}/model",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, "the model server exited"
            assert time.time() < deadline, "the model server did not answer /ping within 120 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        beats = _beats(3).filter(like="x")
        body = json.dumps({"dataframe_split": json.loads(beats.to_json(orient="split", index=False))}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            answer = json.loads(r.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert len(answer) == 3 and {"prediction", "class_name", "p_N", "p_Q"} <= set(answer[0])
    assert all(a["class_name"] == "NSVFQ"[a["prediction"]] for a in answer)
    assert abs(sum(answer[0][f"p_{c}"] for c in "NSVFQ") - 1) < 1e-4


def test_runs_table_lists_every_run_with_its_scores(sweep, tmp_path):
    _, uri, _, runs, children = sweep
    out = tmp_path / "runs.csv"
    res = runner.invoke(app, ["runs", "--tracking-uri", uri, "--sort", "macro_f1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert len(table) == 3 and set(table["id"]) == {r.info.run_id[:8] for r in runs}
    row = table[table["id"] == children["1d"].info.run_id[:8]].iloc[0]
    m = children["1d"].data.metrics
    assert row["macro_f1"] == pytest.approx(m["test_macro_f1"]) and row["params_total"] == m["params_total"]
    assert row["baseline"] == "rf" and row["baseline_macro_f1"] == pytest.approx(m["baseline_rf_macro_f1"])
    assert [c for c in table.columns if c.startswith("recall_")] == [f"recall_{c}" for c in "NSVFQ"]
    assert list(table["macro_f1"].dropna()) == sorted(table["macro_f1"].dropna(), reverse=True)
    for col in ("macro_f1_ci_low", "macro_f1_ci_high"):  # numbers, not "0.354-0.450" text
        assert pd.api.types.is_float_dtype(table[col])
    assert row["macro_f1_ci_low"] == pytest.approx(m["test_macro_f1_ci_low"])
    md = tmp_path / "runs.md"
    assert runner.invoke(app, ["runs", "--tracking-uri", uri, "-o", str(md)]).exit_code == 0
    assert md.read_text().startswith("| name | id |")
    res = runner.invoke(app, ["runs", "--tracking-uri", uri, "--sort", "nope"])
    assert res.exit_code == 2 and "--sort nope: no such column" in res.output


def test_piped_runs_table_keeps_each_run_on_one_line_with_its_parameter_counts(sweep):
    _, uri, _, runs, _ = sweep
    res = subprocess.run(
        [sys.executable, "-m", "ecgvgg.cli.main", "runs", "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert {"params_total", "params_trainable", "params_non_trainable", "seconds"} <= set(header)
    for run in runs:
        (line,) = [ln for ln in lines if run.info.run_id[:8] in ln]
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        assert cells["name"] == run.info.run_name
        if "params_total" in run.data.metrics:
            assert int(cells["params_trainable"]) + int(cells["params_non_trainable"]) == int(cells["params_total"])


def test_version():
    from ecgvgg import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"ecgvgg {__version__}"


def test_terminal_runs_table_shows_whole_cells_and_says_which_columns_it_left_out():
    from rich.console import Console

    from ecgvgg.cli.report import RUN_COLUMNS, runs_table

    row = {
        "name": "adasyn-vgg16_1d-w0.25-123456",
        "id": "0123abcd",
        "run_id": "0123abcd" * 4,
        "experiment": "e",
        "status": "FINISHED",
        "collapsed": "false",
        "sampler": "adasyn",
        "model": "vgg16_1d",
        "input": "1d",
        "params_total": 2914985,
        "params_trainable": 2911000,
        "params_non_trainable": 3985,
        "seconds": 73,
        "epochs": 17,
        "val_macro_f1": 0.4718,
        "macro_f1": 0.8213,
        "macro_f1_ci_low": 0.354,
        "macro_f1_ci_high": 0.4501,
        "cv_macro_f1_mean": 0.462,
        "cv_macro_f1_std": 0.151,
        "baseline": "hgb",
        "baseline_macro_f1": 0.777,
        **{f"recall_{c}": 0.9 for c in "NSVFQ"},
    }
    frame = pd.DataFrame([row, {**row, "id": "4567efgh", "name": "other"}])
    for width in (100, 160, 400):
        console = Console(width=width, record=True)
        console.print(runs_table(frame, "sqlite:///mlruns/mlflow.db", width))
        text = console.export_text()
        assert max(len(ln) for ln in text.splitlines()) <= width
        assert "0.821 [0.354-0.450]" in text and "0123abcd" in text  # whole, never wrapped mid-number
        header = next(ln for ln in text.splitlines() if " id " in ln and "macro-F1" in ln)
        left_out = [c for c in RUN_COLUMNS if f" {c} " not in header and not (c == "recall" and "recall" in header)]
        if width < 400:
            assert left_out and f"{len(left_out)} column(s) left out to fit the terminal" in text
            assert "--out runs.csv" in text and "non-trainable" in left_out
        else:
            assert not left_out and "left out" not in text and "2,914,985" in text


def test_the_dataset_digest_is_mlflows_own(sample_frame):
    from mlflow.data.digest_utils import compute_pandas_digest

    from ecgvgg.tracking.log import pandas_digest

    frame = sample_frame.assign(record=sample_frame["segment"].astype(str))
    assert pandas_digest(frame) == compute_pandas_digest(frame)
    assert pandas_digest(frame.head(100)) != pandas_digest(frame)

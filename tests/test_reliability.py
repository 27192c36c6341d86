"""Runs that are interrupted, resumed, repeated or run side by side: nothing lost, no run lies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from conftest import new_store, RAN, SEED, sets, TINY
from ecgvgg.cli.main import app


def _cmd(*extra: str, epochs: int) -> list[str]:
    args = sets(*TINY, f"training.epochs={epochs}")
    return [sys.executable, "-m", "ecgvgg.cli.main", "run", SEED, *args, *extra]


def _env(uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize("sig", [signal.SIGTERM])  # SIGINT takes the same path: the next test
def test_interrupt_marks_run_killed_and_keeps_its_checkpoint(tmp_path, sig):
    uri = new_store(tmp_path)
    proc = subprocess.Popen(
        _cmd(epochs=200), cwd=tmp_path, env=_env(uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    runs_dir = tmp_path / "mlruns" / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs_dir.glob("*/best.keras")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    time.sleep(2)  # let a few more epochs pass
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), out
    (run,) = _runs(uri)
    assert run.info.status == "KILLED"
    assert f"run {run.info.run_id} was marked KILLED" in out and f"--resume {run.info.run_id}" in out
    assert "RUN_ID" not in out
    client = MlflowClient(uri)
    done = max(h.step for h in client.get_metric_history(run.info.run_id, "val_macro_f1"))
    assert done >= 1
    assert "test_macro_f1" not in run.data.metrics  # no half-finished result
    assert (runs_dir / run.info.run_id / "best.keras").is_file()
    # resuming a killed run, and the epochs it continues from: test_hardening's stale-run test


def test_resume_refuses_a_finished_run_or_a_changed_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = new_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runner = CliRunner()
    args = sets(*TINY, "training.epochs=1")
    first = runner.invoke(app, ["run", SEED, *args])
    assert first.exit_code in RAN, first.output
    run_id = _runs(uri)[0].info.run_id
    res = runner.invoke(app, ["run", SEED, *args, "--resume", run_id])
    assert res.exit_code == 2 and "already finished" in res.output
    res = runner.invoke(app, ["run", SEED, *args, "--resume", "0" * 32])
    assert res.exit_code == 2 and "no such run" in res.output


def test_deterministic_cpu_runs_give_identical_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = new_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runner = CliRunner()
    args = sets(*TINY, "training.epochs=2", "training.deterministic=true")
    for _ in range(2):
        res = runner.invoke(app, ["run", SEED, *args])
        assert res.exit_code in RAN, res.output
    a, b = _runs(uri)
    keys = [k for k in a.data.metrics if k.startswith(("test_", "val_"))]
    assert len(keys) > 20
    assert {k: a.data.metrics[k] for k in keys} == {k: b.data.metrics[k] for k in keys}


def test_two_concurrent_runs_on_one_store_both_complete(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    procs = [
        subprocess.Popen(_cmd(epochs=2), cwd=tmp_path, env=_env(uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode in RAN, out
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # MLflow resolves a run's logged model through it
    mlflow.set_tracking_uri(uri)  # (an earlier in-process test may have set another one)
    runs = _runs(uri)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    client = MlflowClient(uri)
    for r in runs:
        assert "test_macro_f1" in r.data.metrics
        assert len(client.get_metric_history(r.info.run_id, "val_macro_f1")) == 2
        assert "test_confusion_matrix.json" in {a.path for a in client.list_artifacts(r.info.run_id)}
        assert "model/MLmodel" in {a.path for a in client.list_artifacts(r.info.run_id, "model")}
        assert (tmp_path / "mlruns" / "runs" / r.info.run_id / "model.keras").is_file()
    assert runs[0].info.artifact_uri != runs[1].info.artifact_uri


def test_an_interrupt_during_a_training_step_takes_effect_when_the_step_ends():
    import keras
    import numpy as np

    import typer

    from ecgvgg.cli.exits import StepInterrupts, guard

    ended = []

    class InterruptThirdStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    class Ended(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ended.append(batch)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = np.zeros((8, 3), dtype=np.float32), np.zeros(8, dtype=np.int64)
    with pytest.raises(typer.Exit) as stopped, guard():  # as every command runs: Ctrl-C is exit 130
        model.fit(
            x,
            y,
            batch_size=1,
            epochs=1,
            verbose=0,
            callbacks=[InterruptThirdStep(), Ended(), *StepInterrupts().keras_callbacks()],
        )
    assert stopped.value.exit_code == 130
    assert ended == [0, 1, 2]  # the interrupted step finished; no later one began


def test_local_workers_use_every_gpu_each_its_own_when_there_are_enough(monkeypatch):
    from ecgvgg.core.distributed import gpu_shares, local_gpus

    assert gpu_shares(2, ["0", "1", "2", "3"]) == ["0,2", "1,3"]
    assert gpu_shares(4, ["0", "1", "2", "3"]) == ["0", "1", "2", "3"]
    assert gpu_shares(3, ["0", "1"]) == ["0", "1", "0"]
    assert gpu_shares(2, []) == [None, None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert local_gpus() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert local_gpus() == []


def test_two_workers_on_loopback_train_one_model_on_disjoint_shards_in_one_run(tmp_path, shard_folder):
    import keras
    import numpy as np

    uri = new_store(tmp_path)
    env = {**_env(uri), "ECGVGG_WORKER_DIR": str(tmp_path / "worker")}
    streamed = sets(f"data.path={shard_folder}", "data.stream=true", "resampling.sampler=balanced", "baseline=none")
    res = subprocess.run(
        _cmd("--workers", "2", *streamed, epochs=2), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode in RAN, res.stdout + res.stderr
    # the chief reads its own two of the four shards (worker 1 the other two: tests/test_streaming.py)
    assert (
        "worker 0 of 2 streams its training rows from 2 of 4 files: part-00.parquet, part-02.parquet" in res.stdout + res.stderr
    )
    (run,) = _runs(uri)  # one MLflow run, logged by the chief
    assert run.info.status == "FINISHED" and run.data.params["workers"] == "2"
    assert run.data.metrics["epochs_run"] == 2 and "test_macro_f1" in run.data.metrics
    chief = keras.saving.load_model(tmp_path / "mlruns" / "runs" / run.info.run_id / "model.keras", compile=False)
    other = keras.saving.load_model(tmp_path / "worker" / "fold1" / "model.keras", compile=False)
    for a, b in zip(chief.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # gradients all-reduced: the workers hold one model

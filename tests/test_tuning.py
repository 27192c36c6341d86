"""ecgvgg tune: a validated search space, a study shared by processes, pruned trials, a runnable best config."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest

from conftest import new_store, RAN, ROOT, runner as make_runner, runs_in, SEED, sets, TINY
from ecgvgg.cli.main import app
from ecgvgg.core.config import load_config
from ecgvgg.core.errors import ConfigError
from ecgvgg.tracking.tuning import FloatRange, IntRange, open_study, parse_space

LOCAL = [*TINY, "training.epochs=2", "training.collapse_warmup=0", "baseline=none"]
SPACE = "training.learning_rate: [0.001, 0.002]\nmodel.dropout: {low: 0.0, high: 0.3}\n"
runner = make_runner()


def _sets() -> list[str]:
    return sets(*LOCAL)


def test_the_shipped_space_is_valid_and_ranges_are_typed():
    base = load_config(SEED)
    from ecgvgg.tracking.tuning import load_space

    space = load_space(ROOT / "pipelines" / "tune_space.yaml", base)
    assert isinstance(space["training.learning_rate"], FloatRange) and space["training.learning_rate"].log
    assert space["resampling.sampler"] == ["adasyn", "smote", "random", "none"]
    assert isinstance(parse_space({"training.epochs": {"low": 5, "high": 40, "step": 5}}, base)["training.epochs"], IntRange)


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ({"training.epochz": [1, 2]}, "training.epochz: unknown key"),
        ({"training.learning_rate": {"low": 0.01, "high": 0.001}}, "training.learning_rate: range: low must be < high"),
        ({"training.learning_rate": {"low": 0.0, "high": 0.1, "log": True}}, "a log range needs low > 0"),
        ({"training.batch_size": {"low": 0, "high": 64}}, "training.batch_size: Input should be greater than 0"),
        ({"model.width": []}, "model.width: choices must be a non-empty list"),
        ({"resampling.sampler": ["adasyn", "bogus"]}, "resampling.sampler: Input should be 'adasyn'"),
        ({"training.learning_rate": {"low": 0.1, "high": 0.2, "sigma": 1}}, "sigma: Extra inputs are not permitted"),
        ([1, 2], "expected a mapping of config keys"),
    ],
)
def test_a_bad_space_names_the_key(space, needle):
    with pytest.raises(ConfigError, match=None) as err:
        parse_space(space, load_config(SEED), "space.yaml")
    assert needle in str(err.value)


def test_a_bad_space_file_exits_2_before_any_run(store, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("model.width: {low: 2, high: 1}\n")
    res = runner.invoke(app, ["tune", SEED, "--space", str(space), "--trials", "1", *_sets()])
    assert res.exit_code == 2 and "model.width: range: low must be < high" in res.output
    assert runs_in(store) == []


def test_two_processes_share_one_study_and_the_best_config_runs(tmp_path, monkeypatch):
    uri = new_store(tmp_path)
    (tmp_path / "space.yaml").write_text(SPACE)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [
        sys.executable,
        "-m",
        "ecgvgg.cli.main",
        "tune",
        SEED,
        "--space",
        "space.yaml",
        "--trials",
        "1",
        "--study",
        "shared",
        *_sets(),
    ]
    # two workers as the README starts them, without --seed: each explores on its own stream
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    study = open_study("shared", str(tmp_path / "mlruns" / "optuna" / "shared.log"), seed=0, warmup=0)
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 2
    assert len({tuple(sorted(t.params.items())) for t in done}) == 2  # no worker repeats the other's trial
    runs = runs_in(uri)
    parents = [r for r in runs if r.data.tags.get("tune") == "true"]
    assert len(parents) == 2 and {r.data.tags["study"] for r in parents} == {"shared"}
    trials = [r for r in runs if r.data.tags.get("study") == "shared" and "trial" in r.data.tags]
    assert sorted(r.data.tags["trial"] for r in trials) == [str(i) for i in range(2)]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {p.info.run_id for p in parents}
    assert all(
        "optimization_history.png"
        in {a.path for a in __import__("mlflow").tracking.MlflowClient(uri).list_artifacts(p.info.run_id)}
        for p in parents
    )
    best = tmp_path / "mlruns" / "optuna" / "shared-best.yaml"
    cfg = load_config(best)
    assert cfg.training.learning_rate == study.best_params["training.learning_rate"]
    monkeypatch.chdir(tmp_path)  # the best configuration runs as it is, here in this process
    res = runner.invoke(app, ["run", str(best), "--set", "training.epochs=1", "--set", f"tracking.uri={uri}"])
    assert res.exit_code in RAN, res.output


def test_a_pruned_trial_ends_finished_tagged_and_without_test_scores(store, tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    journal = tmp_path / "mlruns" / "optuna" / "pruning.log"
    study = open_study("pruning", str(journal), seed=0, warmup=0)
    for _ in range(2):  # two finished trials that were excellent at every epoch
        trial = study.ask()
        trial.suggest_categorical("training.learning_rate", [0.001, 0.002])
        trial.suggest_float("model.dropout", 0.0, 0.3)
        for step in (1, 2):
            trial.report(0.99, step)
        study.tell(trial, 0.99)
    res = runner.invoke(app, ["tune", SEED, "--space", "space.yaml", "--trials", "1", "--study", "pruning", *_sets()])
    assert res.exit_code == 0, res.output
    assert "pruned at epoch 1" in res.output
    study = open_study("pruning", str(journal), seed=0, warmup=0)
    assert [t.state for t in study.trials][-1] == optuna.trial.TrialState.PRUNED
    (pruned,) = [r for r in runs_in(store) if r.data.tags.get("trial") == "2"]
    assert pruned.info.status == "FINISHED" and pruned.data.tags["pruned"] == "true"
    assert "test_macro_f1" not in pruned.data.metrics and "val_macro_f1" in pruned.data.metrics

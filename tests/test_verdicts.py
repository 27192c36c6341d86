"""Verdicts on small real data: the collapse rule, bootstrap intervals, cross-validation and the fold ensemble."""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import invoke_in_new_store, RAN, runner as make_runner, SAMPLE as SAMPLE_PATH, SEED, sets, TINY
from ecgvgg.cli.main import app
from ecgvgg.core.metrics import bootstrap_macro_f1, held_out_verdict, per_class_scores
from ecgvgg.core.folds import cv_folds, oversample_fold

SAMPLE = str(SAMPLE_PATH)
LOCAL = [*TINY, "training.epochs=1"]
NAMES = list("NSVFQ")
runner = make_runner()


def _sets(*items: str) -> list[str]:
    return sets(*LOCAL, *items)


def test_a_class_missed_only_on_validation_is_a_warning_not_a_collapse():
    y_val, y_test = np.array([0] * 40 + [1] * 3 + [2] * 5), np.array([0] * 40 + [1] * 4 + [2] * 5)
    val_pred = np.r_[np.zeros(43), np.full(5, 2)]  # the 3 S beats of validation are called N
    test_pred = y_test.copy()  # ... but the model finds S on test
    reason, missed = held_out_verdict({"validation": (y_val, val_pred), "test": (y_test, test_pred)}, [0, 1, 2], NAMES[:3])
    assert reason is None and missed == {"S": "validation (3 rows)"}
    from types import SimpleNamespace

    from ecgvgg.core.config import load_config
    from ecgvgg.cli.report import err_console, print_summary

    result = SimpleNamespace(
        cv=None, scores={"macro_f1": 0.8}, ci=None, baseline_macro_f1=None, kind="grouped", missed=missed, cfg=load_config(SEED)
    )
    with err_console.capture() as said:
        print_summary(result)
    text = " ".join(said.get().split())
    assert "no beat of class S in validation (3 rows) was called S (recall 0 there)" in text
    assert "the model does call other beats S, so it has not collapsed" in text and "elsewhere" not in text


def test_a_class_never_predicted_on_any_held_out_row_is_a_collapse_naming_its_support():
    y_val, y_test = np.array([0] * 40 + [1] * 3 + [2] * 5), np.array([0] * 40 + [1] * 4 + [2] * 5)
    no_s = lambda y: np.where(y == 1, 0, y)  # noqa: E731
    reason, missed = held_out_verdict({"validation": (y_val, no_s(y_val)), "test": (y_test, no_s(y_test))}, [0, 1, 2], NAMES[:3])
    assert reason == "never predicts class(es) S (7 rows)" and missed == {}
    dominant = np.zeros(len(y_test))
    reason, _ = held_out_verdict({"test": (y_test, dominant)}, [0, 1, 2], NAMES[:3], dominance=0.8)
    assert reason.startswith("predicts class N for 100.0% of 49 rows")


def test_training_warns_only_when_a_collapsed_state_lasts_and_only_when_it_changes(caplog):
    from ecgvgg.core.training import CollapseMonitor

    class Scored:  # what CollapseMonitor reads from ValidationMetrics after each epoch
        y_val = np.array([0] * 20 + [1] * 20)
        classes, names = [0, 1], ["N", "S"]
        last_pred = None

    healthy, stuck = Scored.y_val.copy(), np.zeros(40)
    monitor = CollapseMonitor(Scored(), patience=3, warmup=3)
    states = []
    # three warm-up epochs stuck on N, one healthy, then a real stall of four epochs, then recovery
    with caplog.at_level(logging.INFO, logger="ecgvgg"):
        for pred in (stuck, stuck, stuck, healthy, stuck, stuck, stuck, stuck, healthy, healthy):
            monitor.metrics.last_pred = pred
            monitor.on_epoch_end(len(states), logs := {})
            states.append(logs["collapsed"])
    assert states == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    lines = [r.getMessage() for r in caplog.records if r.name == "ecgvgg"]
    assert len(lines) == 2
    assert lines[0].startswith("epoch 7: model looks collapsed for 3 epochs") and "no longer" in lines[1]
    # warm-up alone never counts, however long the patience
    quiet = CollapseMonitor(Scored(), patience=1, warmup=3)
    for epoch in range(3):
        quiet.metrics.last_pred = stuck
        quiet.on_epoch_end(epoch, logs := {})
        assert logs["collapsed"] == 0


def test_bootstrap_interval_contains_the_estimate_and_widens_when_errors_cluster_in_groups():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(60), 20)
    y = rng.integers(0, 3, len(groups))
    wrong_groups = rng.random(60) < 0.2  # errors come a whole recording at a time
    pred = np.where(wrong_groups[groups], (y + 1) % 3, y)
    point = per_class_scores(y, pred, [0, 1, 2])["macro_f1"]
    by_beat = bootstrap_macro_f1(y, pred, [0, 1, 2], seed=0)
    by_group = bootstrap_macro_f1(y, pred, [0, 1, 2], groups, seed=0)
    assert by_beat[0] <= point <= by_beat[1] and by_group[0] <= point <= by_group[1]
    assert by_group[1] - by_group[0] > 2 * (by_beat[1] - by_beat[0])
    assert bootstrap_macro_f1(y, y, [0, 1, 2], groups) == (1.0, 1.0)
    assert bootstrap_macro_f1(y, pred, [0, 1, 2], groups, seed=0) == by_group  # seeded


def test_cv_folds_partition_the_rows_and_never_share_a_group(sample_xyg):
    X, y, g = sample_xyg
    folds = cv_folds(y, folds=5, groups=g, val_size=0.1, seed=0, classes=range(5))
    tests = np.concatenate([test for _, _, test in folds])
    assert len(folds) == 5 and np.array_equal(np.sort(tests), np.arange(len(y)))
    gs = g.to_numpy()
    for train, val, test in folds:
        parts = [set(gs[train]), set(gs[val]), set(gs[test])]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set(y.to_numpy()[train]) == set(range(5))


def test_each_fold_oversamples_only_its_own_training_part(sample_xyg):
    X, y, g = sample_xyg
    Xa = X.to_numpy()
    for fold in cv_folds(y, folds=3, groups=g, seed=0, classes=range(5)):
        splits = oversample_fold(Xa, y.to_numpy(), *fold, sampler="random", seed=0, classes=range(5))
        own = {row.tobytes() for row in Xa[splits.train_index]}
        assert all(row.tobytes() in own for row in splits.X_train)  # every duplicate comes from its training part
        np.testing.assert_array_equal(splits.X_test, Xa[splits.test_index])
        np.testing.assert_array_equal(splits.X_val, Xa[splits.val_index])
        assert splits.counts_after[3] > splits.counts_before[3]


def test_fold_ensemble_averages_its_members():
    from ecgvgg.core.models import fold_ensemble, vgg16

    members = [vgg16(width=0.0625, dense_units=8, batch_norm=True) for _ in range(3)]
    x = np.random.default_rng(0).random((6, 187, 1), dtype=np.float32)
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(fold_ensemble(members).predict(x, verbose=0), expected, atol=1e-6)


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """One tiny 2-fold cross-validated run of the seed pipeline on the bundled sample."""
    settings = _sets("split.folds=2", "tracking.gradcam_per_class=20", "baseline=rf")
    return invoke_in_new_store(tmp_path_factory, "cv", ["run", SEED, *settings])


def test_cross_validated_run_logs_folds_out_of_fold_scores_and_interval(cv_run):
    tmp, uri, result = cv_run
    assert result.exit_code in RAN, result.output
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("cv") == "true")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["fold"] for r in children) == ["1", "2"]
    assert all("test_macro_f1" in r.data.metrics and r.info.status == "FINISHED" for r in children)
    m, t = parent.data.metrics, parent.data.tags
    assert parent.data.params["split.folds"] == "2" and t["split_kind"] == "grouped by segment"
    fold_f1 = [r.data.metrics["test_macro_f1"] for r in children]
    assert m["cv_macro_f1_mean"] == pytest.approx(np.mean(fold_f1))
    assert m["cv_macro_f1_std"] == pytest.approx(np.std(fold_f1, ddof=1))
    for key in ("cv_recall_S_mean", "cv_recall_S_std", "oof_recall_F", "oof_f1_N", "baseline_rf_macro_f1"):
        assert key in m, key
    assert m["oof_macro_f1_ci_low"] <= m["oof_macro_f1"] <= m["oof_macro_f1_ci_high"]
    assert (t["collapsed"] == "true") == (result.exit_code == 3)
    # the parent row reads as one fold's network: its size, and the epochs a fold trained on average
    child = children[0].data.metrics
    assert m["params_total"] == child["params_total"] and m["params_trainable"] == child["params_trainable"] > 0
    assert m["epochs_run"] == pytest.approx(np.mean([r.data.metrics["epochs_run"] for r in children]), abs=0.05)
    assert m["folds"] == 2

    oof = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="oof_predictions.parquet", tracking_uri=uri)
    )
    sample = pd.read_parquet(SAMPLE)
    assert list(oof["row"]) == list(range(len(sample)))  # every input row once
    assert list(oof.columns) == ["row", "fold", "label", "prediction", "segment", *[f"p_{n}" for n in NAMES]]
    assert (oof["label"] == sample["label"]).all() and (oof["segment"] == sample["segment"]).all()
    assert oof.groupby("segment")["fold"].nunique().max() == 1  # a segment is tested in one fold only
    oof_f1 = per_class_scores(oof["label"], oof["prediction"], range(5))["macro_f1"]
    assert oof_f1 == pytest.approx(m["oof_macro_f1"])
    explained = {a.path for a in client.list_artifacts(parent.info.run_id, "explain")}  # pooled over the folds
    assert explained == {f"explain/gradcam_{NAMES[c]}.png" for c in oof["prediction"].unique()}
    assert "±" in result.output and "95% bootstrap interval" in result.output
    assert "VGG16 vs random forest" in result.output


def test_the_fold_ensemble_is_the_parent_model_for_evaluate_and_predict(cv_run, tmp_path):
    import json

    from ecgvgg.tracking.store import load_run_model

    tmp, uri, _ = cv_run
    client = MlflowClient(uri)
    parent = next(
        r for r in client.search_runs([e.experiment_id for e in client.search_experiments()]) if r.data.tags.get("cv") == "true"
    )
    res = runner.invoke(
        app, ["evaluate", "--run", parent.info.run_id, "--tracking-uri", uri, SAMPLE, "--group-column", "segment", "--json"]
    )
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    assert "training or validation split" in res.stderr  # every segment trained some fold's model
    loaded = load_run_model(uri, parent.info.run_id)
    assert [layer.name for layer in loaded.model.layers if layer.name.startswith("fold_")] == ["fold_1", "fold_2"]
    sample = pd.read_parquet(SAMPLE)
    X = sample.filter(like="x")
    assert scores["accuracy"] == pytest.approx(loaded.score(X, sample["label"])["accuracy"])
    out = tmp_path / "pred.parquet"
    res = runner.invoke(
        app, ["predict", "--run", parent.info.run_id, "--tracking-uri", uri, SAMPLE, "--group-column", "segment", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(pd.read_parquet(out).filter(like="p_").to_numpy(), loaded.predict_proba(X), atol=1e-5)


def test_ungrouped_runs_say_the_score_is_optimistic(store, caplog):
    with caplog.at_level(logging.WARNING, logger="ecgvgg"):
        res = runner.invoke(app, ["run", SEED, *_sets("split.grouped=false", "baseline=none")])
    assert res.exit_code in RAN, res.output
    assert sum("so the score is optimistic" in r.getMessage() for r in caplog.records) == 1
    assert "split: ungrouped beats" in res.output
    assert "VGG16 vs random forest" not in res.output
    client = MlflowClient(store)
    run = client.search_runs([e.experiment_id for e in client.search_experiments()])[0]
    assert run.data.tags["split_kind"] == "ungrouped beats"

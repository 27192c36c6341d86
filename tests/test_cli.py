"""The ecgvgg command in-process against a real MLflow SQLite store in a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import BAD, DATA, invoke_in_new_store, RAN, ROOT, runner as make_runner, runs_in, SEED, sets, TINY
from ecgvgg.cli.main import app

LOCAL = [*TINY, "training.epochs=3"]
runner = make_runner()


def _sets(*items: str) -> list[str]:
    return sets(*LOCAL, *items)


_runs = runs_in


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny real run of the seed pipeline, shared by the tests that read it."""
    return invoke_in_new_store(tmp_path_factory, "run", ["run", SEED, *_sets("tracking.gradcam_per_class=20", "baseline=rf")])


def test_run_logs_per_class_metrics_and_artifacts(tiny_run):
    tmp, uri, result = tiny_run
    assert result.exit_code in RAN, result.output
    runs = _runs(uri)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_id in result.output and "macro F1" in result.output
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    for key in (
        "test_accuracy",
        "test_macro_f1",
        "test_recall_F",
        "test_precision_N",
        "test_f1_Q",
        "val_macro_f1",
        "val_f1_S",
        "val_recall_V",
        "val_precision_F",
        "test_se_S",
        "test_ppv_V",
        "test_fpr_S",
    ):
        assert key in m, key
    assert t["collapsed"] in ("true", "false") and t["sampler"] == "adasyn" and t["input"] == "1d"
    assert t["split_kind"] == "grouped by segment" and "missed_classes" in t
    assert m["test_macro_f1_ci_low"] <= m["test_macro_f1"] <= m["test_macro_f1_ci_high"]
    assert 0 < m["baseline_rf_macro_f1"] <= 1
    assert f"VGG16 vs random forest: {m['test_macro_f1']:.3f} vs {m['baseline_rf_macro_f1']:.3f}" in result.output
    assert "95% bootstrap interval" in result.output and t["baseline"] == "rf"
    assert "training is not deterministic" in result.output and "training.deterministic: true" in result.output
    assert p["training.epochs"] == "3" and p["model.width"] == "0.0625" and p["resampling.sampler"] == "adasyn"
    assert int(p["count_train_after_F"]) > int(p["count_train_before_F"])
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "val_macro_f1")
    assert [h.step for h in history] == [1, 2, 3]
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
    assert {
        "test_confusion_matrix.png",
        "test_confusion_matrix.json",
        "test_classification_report.txt",
        "class_counts.json",
        "test_aami_ec57.json",
    } <= artifacts
    mlflow.set_tracking_uri(uri)  # MLflow resolves a run's logged model through it
    assert "model/MLmodel" in {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "model")}
    assert "S (SVEB)" in result.output and "FPR" in result.output
    matrix = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="test_confusion_matrix.json", tracking_uri=uri
            )
        ).read_text()
    )
    diag = np.trace(matrix["matrix"]) / np.sum(matrix["matrix"])
    predicted = [n for n, column in zip("NSVFQ", np.sum(matrix["matrix"], axis=0)) if column]
    explained = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "explain")}
    assert explained == {f"explain/gradcam_{n}.png" for n in predicted}  # one Grad-CAM picture per predicted class
    assert diag == pytest.approx(m["test_accuracy"])
    assert np.sum(matrix["matrix"]) == sum(int(p[f"count_test_{c}"]) for c in "NSVFQ")
    assert (t["collapsed"] == "true") == (result.exit_code == 3)
    mlflow.set_tracking_uri(uri)
    signature = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model").signature
    assert signature.inputs.input_names() == [f"x{i}" for i in range(187)]
    assert signature.outputs.input_names() == ["prediction", "class_name", "p_N", "p_S", "p_V", "p_F", "p_Q"]


def test_evaluate_and_predict_with_the_saved_model(tiny_run, tmp_path):
    tmp, uri, _ = tiny_run
    run_id = _runs(uri)[0].info.run_id
    model = tmp / "mlruns" / "runs" / run_id / "model.keras"
    data = str(ROOT / "ecgvgg" / "sample_data" / "mitbih_beats_imbalanced.parquet")
    res = runner.invoke(app, ["evaluate", "--model", str(model), data, "--group-column", "segment", "--json"])
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    assert 0 <= scores["macro_f1"] <= 1 and set(scores["recall"]) == set("NSVFQ")
    # the model's own training table: its training and validation segments are named as overlap
    assert "were in the model's training or validation split" in res.stderr
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--run",
            run_id,
            "--tracking-uri",
            uri,
            "sample:mitbih_beats_imbalanced.parquet",
            "--group-column",
            "segment",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["accuracy"] == pytest.approx(scores["accuracy"])
    out = tmp_path / "pred.csv"
    res = runner.invoke(app, ["predict", "--model", str(model), data, "--group-column", "segment", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "do better on them than on new recordings" in res.stderr and "scores" not in res.stderr  # no scores here
    assert "look cut or scaled unlike" not in res.stderr  # the model's own kind of beats
    # beats cut another way (a window around the R peak, in millivolts): a loud warning naming the likely cause
    from ecgvgg.core.records import prepare_records

    other, _ = prepare_records(DATA / "records", method="window", before=0.5, after=1.0)
    other[[f"x{i}" for i in range(187)] + ["label"]].to_parquet(tmp_path / "window.parquet")
    res = runner.invoke(app, ["predict", "--model", str(model), str(tmp_path / "window.parquet"), "-o", str(tmp_path / "p2.csv")])
    assert res.exit_code == 0, res.output
    said = " ".join(res.stderr.split())
    assert "look cut or scaled unlike the model's training beats" in said and "ecgvgg prepare --method" in said
    pred = pd.read_csv(out)
    assert len(pred) == 1269 and list(pred.columns) == [
        "label",
        "segment",
        "prediction",
        "class_name",
        "p_N",
        "p_S",
        "p_V",
        "p_F",
        "p_Q",
    ]
    assert (pred["label"] == pd.read_parquet(data)["label"]).all()  # the input's label and group stay beside
    np.testing.assert_allclose(pred.filter(like="p_").sum(axis=1), 1, atol=1e-4)


def test_evaluate_and_predict_check_their_table_before_loading_tensorflow(tiny_run, tmp_path):
    import subprocess
    import sys

    tmp, uri, _ = tiny_run
    model = tmp / "mlruns" / "runs" / _runs(uri)[0].info.run_id / "model.keras"
    code = (
        "import sys\nfrom ecgvgg.cli.main import app\n"
        f"sys.argv = ['ecgvgg', 'evaluate', '--model', {str(model)!r}, 'missing.parquet']\n"
        "try:\n    app()\nexcept SystemExit:\n"
        "    print('tensorflow loaded:', 'tensorflow' in sys.modules, file=sys.stderr)\n    raise\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and "missing.parquet: no such file" in res.stderr
    assert "tensorflow loaded: False" in res.stderr
    unlabelled = tmp_path / "unlabelled.parquet"
    pd.read_parquet(ROOT / "ecgvgg" / "sample_data" / "mitbih_beats_imbalanced.parquet").drop(columns=["label"]).to_parquet(
        unlabelled
    )
    res = runner.invoke(app, ["evaluate", "--model", str(model), str(unlabelled)])
    assert res.exit_code == 2 and "set --label-column" in res.output and "data.label_column" not in res.output


def test_a_unique_run_id_prefix_works_and_an_ambiguous_or_unknown_one_is_refused(tiny_run, tmp_path, monkeypatch):
    from ecgvgg.tracking.store import resolve_run_id

    tmp, uri, _ = tiny_run
    run_id = _runs(uri)[0].info.run_id
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    sample = str(ROOT / "ecgvgg" / "sample_data" / "mitbih_beats_imbalanced.parquet")
    res = runner.invoke(app, ["evaluate", "--run", run_id[:8], sample, "--json"])
    assert res.exit_code == 0, res.output
    assert resolve_run_id(uri, run_id[:6]) == run_id
    unknown = runner.invoke(app, ["evaluate", "--run", "zzzzzzzz", sample])
    assert unknown.exit_code == 2 and "--run zzzzzzzz: no run with that id" in unknown.output
    # two runs whose ids share a prefix, in a store of their own
    runs = tmp_path / "mlruns" / "runs"
    for name in ("abc1" + "0" * 28, "abc2" + "0" * 28):
        (runs / name).mkdir(parents=True)
    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    with pytest.raises(Exception, match=r"--run abc: ambiguous, it starts 2 run ids \(abc10+, abc20+\)"):
        resolve_run_id(store, "abc")
    assert resolve_run_id(store, "abc2") == "abc2" + "0" * 28
    table = tmp / "runs.csv"
    assert runner.invoke(app, ["runs", "-o", str(table)]).exit_code == 0
    assert run_id in set(pd.read_csv(table)["run_id"])


def test_model_that_does_not_fit_the_data_is_exit_2(tiny_run, tmp_path):
    tmp, uri, _ = tiny_run
    model = tmp / "mlruns" / "runs" / _runs(uri)[0].info.run_id / "model.keras"
    short = tmp_path / "short.csv"
    pd.DataFrame(np.zeros((4, 100)), columns=[f"x{i}" for i in range(100)]).assign(label=[0, 1, 0, 1]).to_csv(short, index=False)
    res = runner.invoke(app, ["evaluate", "--model", str(model), str(short)])
    assert res.exit_code == 2 and "has 100 samples per beat but the model" in res.output


def test_signal_free_data_exits_3_and_is_tagged(store, sample_frame, tmp_path):
    zeros = sample_frame.copy()
    zeros[[c for c in zeros.columns if c.startswith("x")]] = 0.0
    path = tmp_path / "zeros.parquet"
    zeros.to_parquet(path)
    res = runner.invoke(app, ["run", SEED, *_sets(f"data.path={path}", "baseline=none")])
    assert res.exit_code == 3, res.output
    assert "COLLAPSED MODEL" in res.output
    run = _runs(store)[0]
    assert run.data.tags["collapsed"] == "true" and run.info.status == "FINISHED"
    assert "baseline_rf_macro_f1" not in run.data.metrics


def _data(name: str, *extra: str) -> list[str]:
    return [
        "run",
        SEED,
        "--set",
        f"data.path={BAD / name}",
        "--set",
        "data.group_column=null",
        *[a for e in extra for a in ("--set", e)],
    ]


BAD_INPUTS = [
    (["run", str(BAD / "negative_batch.yaml")], "training.batch_size: Input should be greater than 0"),
    (["run", str(BAD / "unknown_key.yaml")], "training.epochz: unknown key"),
    (["run", str(BAD / "wrong_type.yaml")], "training.learning_rate: Input should be a valid number (got 'fast')"),
    (["run", str(BAD / "missing_path.yaml")], "data.path: required"),
    (["run", str(BAD / "bad_sampler.yaml")], "resampling.sampler: Input should be 'adasyn'"),
    (
        ["run", str(BAD / "class_names_mismatch.yaml"), "--set", f"data.path={BAD / 'labels_0_to_4.csv'}"],
        "outside the configured classes [0, 1, 2]",
    ),
    (_data("empty.csv"), "empty.csv: file is empty"),
    (_data("header_in_headerless.csv", "data.header=false"), "line 1 looks like a header row"),
    (_data("ragged.csv"), "ragged.csv: line 5 has 187 columns, expected 188"),
    (_data("non_numeric.csv"), "column 10 is not numeric at line 6: 'abc'"),
    (_data("nan.csv"), "nan.csv: column 7 has nan at line 3"),
    (_data("inf.csv"), "inf.csv: column 7 has inf at line 3"),
    (_data("label_7.csv"), "label column 187 has 7 at line 4, outside the configured classes"),
    (_data("label_1_5.csv"), "has 1.5 at line 4; labels must be integers"),
    (_data("one_class.csv"), "one_class.csv: all 3 rows have label 0"),
    (_data("x_short.csv", f"data.y_path={BAD / 'y_long.csv'}"), "14 rows of X but"),
    (_data("no_label.parquet"), "no_label.parquet: no label column 'label'"),
    (_data("does_not_exist.csv"), "does_not_exist.csv: no such file"),
    (_data(""), "bad: no label column 'label'"),  # a folder is read as its Parquet shards (one, unlabelled)
]


@pytest.mark.parametrize(("args", "needle"), BAD_INPUTS, ids=[n[:28] for _, n in BAD_INPUTS])
def test_bad_config_or_data_exits_2_with_one_line_and_no_run(store, args, needle):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert needle in text
    assert text.startswith("error:") and "Traceback" not in res.output
    assert _runs(store) == []


def test_sweep_creates_child_runs_under_one_parent(store):
    res = runner.invoke(app, ["sweep", SEED, "--grid", "resampling.sampler=random,balanced", *_sets("training.epochs=1")])
    assert res.exit_code in RAN, res.output
    runs = _runs(store)
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.params["resampling.sampler"] for r in children) == ["balanced", "random"]
    assert "val macro-F1" in res.output
    balanced = next(r.data.params for r in children if r.data.params["resampling.sampler"] == "balanced")
    for c in "NSVFQ":  # balanced batches, no copies: the training split keeps its rows, and no class weights
        assert balanced[f"count_train_after_{c}"] == balanced[f"count_train_before_{c}"]
        assert f"class_weight_{c}" not in balanced


def test_de_chazal_protocol_tests_on_ds2_records_only(store, sample_frame, tmp_path):
    from ecgvgg.core.records import DS1, DS2

    segments = sorted(sample_frame["segment"].unique())
    names = (*DS1, *DS2, "102")  # 102 is paced: left out of both sides
    to_record = {seg: names[i % len(names)] for i, seg in enumerate(segments)}
    frame = sample_frame.assign(record=sample_frame["segment"].map(to_record)).drop(columns="segment")
    path = tmp_path / "records.parquet"
    frame.to_parquet(path)
    res = runner.invoke(
        app,
        ["run", SEED, *_sets("training.epochs=1", f"data.path={path}", "data.group_column=record", "split.protocol=de_chazal")],
    )
    assert res.exit_code in RAN, res.output
    params = _runs(store)[0].data.params
    n_test = sum(int(params[f"count_test_{c}"]) for c in "NSVFQ")
    assert n_test == int(frame["record"].isin(DS2).sum())
    n_train = sum(int(params[f"count_train_before_{c}"]) + int(params[f"count_val_{c}"]) for c in "NSVFQ")
    assert n_train == int(frame["record"].isin(DS1).sum())


def test_the_returned_models_validation_scores_are_logged_and_listed(tmp_path_factory):
    tmp, uri, res = invoke_in_new_store(
        tmp_path_factory,
        "best_val",
        [
            "run",
            SEED,
            *_sets("training.epochs=5", "training.early_stopping_patience=5", "training.learning_rate=0.01", "baseline=none"),
        ],
    )
    assert res.exit_code in RAN, res.output
    (run,) = _runs(uri)
    m = run.data.metrics
    history = {h.step: h.value for h in MlflowClient(uri).get_metric_history(run.info.run_id, "val_macro_f1")}
    best = int(m["best_epoch"])
    assert m["model_val_macro_f1"] == pytest.approx(history[best], abs=1e-6)  # the returned (best) model's score
    assert {"model_val_recall_S", "model_val_precision_V", "model_val_f1_N"} <= set(m)
    lines = runner.invoke(app, ["runs", "--tracking-uri", uri]).output.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = dict(zip(header, (c.strip() for c in lines[2].strip("|").split("|"))))
    assert cells["val_macro_f1"] == f"{m['model_val_macro_f1']:.3f}"  # not the last epoch's val_macro_f1


def test_piped_output_is_not_wrapped_at_80_columns(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / ("a_rather_long_folder_name_for_the_beats_table" * 2) / "beats.parquet"
    out.parent.mkdir()
    records = str(ROOT / "tests" / "data" / "records")
    res = subprocess.run(
        [sys.executable, "-m", "ecgvgg.cli.main", "prepare", records, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert res.returncode == 0, res.stderr
    (line,) = [ln for ln in res.stdout.splitlines() if ln.startswith("wrote")]
    assert str(out) in line and line.endswith("not kept; leads MLII")


def test_help_shows_flags_as_flags_and_keeps_brackets(tiny_run):
    tmp, uri, _ = tiny_run
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0 and "--debug" in top.output and "<bool>" not in top.output
    tune = runner.invoke(app, ["tune", "--help"], env={"COLUMNS": "200"})
    assert "[choices]" in tune.output
    stale = runner.invoke(app, ["runs", "--stale", "--tracking-uri", uri])
    assert stale.exit_code == 0 and "no stale runs" in stale.output and "|" not in stale.output
    wrong = runner.invoke(app, ["runs", "--experiment", "adasyn-vgg", "--tracking-uri", uri])
    assert wrong.exit_code == 2 and "experiments: Default, adasyn_vgg)" in wrong.output


def test_runs_plot_draws_each_scored_run_with_its_interval_against_time(tiny_run, tmp_path):
    from ecgvgg.core.figures import runs_figure
    from ecgvgg.tracking.runs import collect_runs

    _, uri, _ = tiny_run
    out = tmp_path / "runs.png"
    res = runner.invoke(app, ["runs", "--tracking-uri", uri, "--plot", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.partial*"))
    frame = collect_runs(uri)
    (ax,) = runs_figure(frame).axes
    assert [t.get_text() for t in ax.texts] == list(frame["name"])  # one labelled point per run
    (point,) = [line for line in ax.lines if len(line.get_xdata()) == 1 and line.get_marker() == "o"]
    assert point.get_ydata()[0] == pytest.approx(frame["macro_f1"].iloc[0])
    res = runner.invoke(app, ["runs", "--tracking-uri", uri, "--plot", str(tmp_path / "runs.jpg")])
    assert res.exit_code == 2 and "use a .png file name" in res.output


def test_help_has_whole_summaries_readable_placeholders_and_examples():
    runner = make_runner()
    res = runner.invoke(app, ["--help"], terminal_width=100)
    commands = res.output.split("Commands:")[1]
    assert "..." not in commands and "run " in commands and "download" in commands
    for name in ("run", "evaluate", "predict", "explain", "export", "prepare", "download", "sweep", "tune", "runs"):
        text = runner.invoke(app, [name, "--help"], terminal_width=100).output
        options = text.split("Options:")[1]
        assert not any(bad in options for bad in ("<list[", "<int range>", "<str>", "<float>", "<path>")), text
        assert "{" + name not in text.split("\n")[0]  # the usage line names arguments in capitals
        assert "Examples:" in text and f"ecgvgg {name}" in text.split("Examples:")[1]
    run_help = runner.invoke(app, ["run", "--help"], terminal_width=100).output
    assert "--tracking-uri URI" in run_help and "(repeatable)" in run_help and "{CONFIG}" in run_help
    assert "-o, --out PATH" in runner.invoke(app, ["tune", "--help"], terminal_width=100).output
    prepare_help = " ".join(runner.invoke(app, ["prepare", "--help"], terminal_width=100).output.split())
    assert "a record without it uses MLII, else ECG1, else its first signal" in prepare_help


def test_tensorflow_info_lines_and_retracing_notes_stay_off_the_terminal():
    import logging

    assert make_runner().invoke(app, ["runs", "--help"]).exit_code == 0
    tf_log = logging.getLogger("tensorflow")
    assert tf_log.getEffectiveLevel() == logging.WARNING
    info = tf_log.makeRecord("tensorflow", logging.INFO, __file__, 1, "Collective all-reduce", None, None)
    retrace = tf_log.makeRecord(
        "tensorflow", logging.WARNING, __file__, 1, "5 out of the last 5 calls triggered tf.function retracing", None, None
    )
    other = tf_log.makeRecord("tensorflow", logging.WARNING, __file__, 1, "something else", None, None)
    assert not tf_log.isEnabledFor(info.levelno) and not tf_log.filter(retrace) and tf_log.filter(other)

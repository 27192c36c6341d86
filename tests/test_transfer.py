"""Transfer learning: start from another run's network, freeze blocks, a new head, fine-tune in two phases."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from conftest import invoke_in_new_store, RAN, runner as make_runner, runs_in, SEED, sets, TINY
from ecgvgg.cli.main import app

LOCAL = [*TINY, "baseline=none"]
runner = make_runner()


def _sets(*items: str) -> list[str]:
    return sets(*LOCAL, *items)


def test_frozen_blocks_keep_their_weights_and_later_blocks_learn(sample_xyg):
    from ecgvgg.core.models import freeze_blocks, trainable_count, vgg16
    from ecgvgg.core.folds import split_then_oversample
    from ecgvgg.core.shapes import to_1d
    from ecgvgg.core.config import TrainingConfig
    from ecgvgg.core.training import fit, setup_device

    X, y, g = sample_xyg
    splits = split_then_oversample(X, y, groups=g, sampler="random", seed=0).map_x(to_1d)
    setup_device(seed=0, mixed_precision=False)
    model = freeze_blocks(vgg16(width=0.0625, dense_units=16, batch_norm=True), 2)
    frozen = [ly for ly in model.layers if ly.name.startswith(("block1_", "block2_")) and ly.weights]
    later = [ly for ly in model.layers if ly.name.startswith(("block5_conv", "fc1")) and ly.weights]
    before = {ly.name: [w.numpy().copy() for w in ly.weights] for ly in frozen + later}
    assert 0 < trainable_count(model) < model.count_params()
    fit(model, splits, TrainingConfig(epochs=1, batch_size=128, early_stopping_patience=0, reduce_lr_patience=0))
    for ly in frozen:  # kernels and batch-norm moving statistics alike
        for old, new in zip(before[ly.name], ly.weights):
            np.testing.assert_array_equal(old, new.numpy(), err_msg=ly.name)
    assert all(not np.array_equal(before[ly.name][0], ly.weights[0].numpy()) for ly in later)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, sample_frame):
    """A tiny 5-class run to start from, and a two-class (normal vs abnormal) table of the same beats."""
    tmp, uri, res = invoke_in_new_store(tmp_path_factory, "source", ["run", SEED, *_sets("training.epochs=2")])
    assert res.exit_code in RAN, res.output
    binary = tmp / "binary.parquet"
    sample_frame.assign(label=(sample_frame["label"] != 0).astype(int)).to_parquet(binary)
    return tmp, uri, runs_in(uri)[0].info.run_id, binary


def test_a_new_two_class_head_fine_tunes_from_a_five_class_run(source_run, monkeypatch):
    import keras

    from ecgvgg.core.inference import load_model

    tmp, uri, source_id, binary = source_run
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = runner.invoke(
        app,
        [
            "run",
            SEED,
            *_sets(
                "training.epochs=3",
                f"model.weights=run:{source_id}",
                "model.new_head=true",
                f"data.path={binary}",
                "data.class_names=[normal, abnormal]",
                "model.frozen_blocks=3",
                "training.unfreeze_after=2",
            ),
        ],
    )
    assert res.exit_code in RAN, res.output
    run = next(r for r in runs_in(uri) if r.info.run_id != source_id)
    m = run.data.metrics
    assert m["unfrozen_at_epoch"] == 2 and m["epochs_run"] == 3
    source_m = next(r for r in runs_in(uri) if r.info.run_id == source_id).data.metrics
    # the second phase trained everything: only batch normalisation's moving statistics are not trainable
    assert m["params_non_trainable"] == source_m["params_non_trainable"] > 0
    tuned = load_model(tmp / "mlruns" / "runs" / run.info.run_id / "model.keras")
    source = keras.saving.load_model(tmp / "mlruns" / "runs" / source_id / "model.keras", compile=False)
    assert tuned.class_names == ["normal", "abnormal"] and tuned.model.output_shape == (None, 2)
    assert tuned.model.get_layer("block1_conv1").kernel.shape == source.get_layer("block1_conv1").kernel.shape


def test_frozen_runs_log_what_they_train(source_run, monkeypatch):
    tmp, uri, source_id, _ = source_run
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = runner.invoke(
        app,
        [
            "run",
            SEED,
            *_sets("training.epochs=1", f"model.weights=run:{source_id}", "model.frozen_blocks=5", "tracking.experiment=frozen"),
        ],
    )
    assert res.exit_code in RAN, res.output
    (run,) = [r for r in runs_in(uri) if r.data.params.get("model.frozen_blocks") == "5"]
    m = run.data.metrics
    assert 0 < m["params_trainable"] < m["params_total"] * 0.5
    assert m["params_trainable"] + m["params_non_trainable"] == m["params_total"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["input.kind=2d"], "input.kind 1d there, 2d here"),
        (["data.class_names=[normal, abnormal]"], "set model.new_head: true for a new class list"),
        (["model.weights=run:" + "0" * 32], "no logged model"),
    ],
)
def test_a_source_run_that_does_not_fit_exits_2_before_any_run(source_run, monkeypatch, extra, needle):
    tmp, uri, source_id, binary = source_run
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = len(runs_in(uri))
    sets = [f"model.weights=run:{source_id}", *extra]
    if "data.class_names=[normal, abnormal]" in extra:
        sets.append(f"data.path={binary}")
    res = runner.invoke(app, ["run", SEED, *_sets(*sets)])
    assert res.exit_code == 2, res.output
    assert needle in " ".join(res.output.split()) and res.output.startswith("error: model.weights")
    assert len(runs_in(uri)) == before


def test_two_phase_settings_are_checked():
    from ecgvgg.core.config import load_config
    from ecgvgg.core.errors import ConfigError

    with pytest.raises(ConfigError, match="needs model.frozen_blocks > 0"):
        load_config(SEED, ["training.unfreeze_after=2"])
    with pytest.raises(ConfigError, match="must be < training.epochs"):
        load_config(SEED, ["training.unfreeze_after=50", "model.frozen_blocks=2"])
    assert pd.notna(load_config(SEED, ["model.weights=run:abc"]).model.weights)

"""Shared fixtures: the bundled real MIT-BIH sample and a throwaway MLflow store."""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Test processes run side by side (pytest-xdist): on a GPU each takes the memory it needs, not all of it.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

import pandas as pd
import pytest

from ecgvgg import sample_path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
BAD = DATA / "bad"
#: The seed pipeline and the real beats bundled with the package.
SEED = str(ROOT / "pipelines" / "adasyn_vgg.yaml")
SAMPLE = ROOT / "ecgvgg" / "sample_data" / "mitbih_beats_imbalanced.parquet"
#: Settings that train a tiny network in seconds; each test adds its epochs and what it checks.
#: Grad-CAM pictures and the baseline are off here; the tests that check them turn them on.
TINY = [
    "model.width=0.0625",
    "model.dense_units=16",
    "training.batch_size=128",
    "training.early_stopping_patience=0",
    "training.reduce_lr_patience=0",
    "tracking.gradcam_per_class=0",
    "baseline=none",
]

#: pipelines/interpatient_cv.yaml shrunk to a tiny network for the two 3-minute real records of
#: tests/data (a single ungrouped split); each test adds its epochs and channels.
TINY_RECORDS = [
    "training.warmup_epochs=1",
    "model.width=0.0625",
    "model.dense_units=16",
    "training.batch_size=64",
    "training.learning_rate=0.003",
    "split.grouped=false",
    "split.folds=null",
    "data.class_names=[N,S,V,F]",
    "baseline=none",
]


#: Exit statuses of a run that trained to its end: 0, or 3 when its tiny network collapsed. Tests
#: of wiring (what is logged, saved, refused or resumed) accept both; tests of learning assert 0 or
#: a score above chance.
RAN = (0, 3)


def sets(*items: str) -> list[str]:
    """``--set`` options for each ``key.path=value`` item."""
    return [arg for item in items for arg in ("--set", item)]


def write_record(folder: Path, name: str, signal, fs: float, leads=("MLII", "V1")) -> Path:
    """A WFDB record of ``signal`` (samples x leads, in mV) named ``name`` in ``folder``; its path without extension."""
    import wfdb

    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * signal.shape[1],
        sig_name=list(leads),
        p_signal=signal,
        fmt=["16"] * signal.shape[1],
        write_dir=str(folder),
    )
    return folder / name


def runner():
    """A Typer test runner of the ``ecgvgg`` command."""
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture(scope="session")
def sample_frame() -> pd.DataFrame:
    """The bundled real beats: x0..x186, label, segment."""
    return pd.read_parquet(sample_path())


@pytest.fixture(scope="session")
def sample_xyg():
    """The bundled sample loaded through the public loader."""
    from ecgvgg.core.data import load_xy

    return load_xy(sample_path(), group_column="segment")


@pytest.fixture(scope="session")
def real_splits(sample_xyg):
    """The bundled sample split by segment, ADASYN on the training part only, as 1D beats (shared: do not modify)."""
    from ecgvgg.core.folds import split_then_oversample
    from ecgvgg.core.shapes import to_1d

    X, y, g = sample_xyg
    return split_then_oversample(X, y, groups=g, sampler="adasyn", seed=0).map_x(to_1d)


_EMPTY_STORE: list[Path] = []


def new_store(folder: Path) -> str:
    """The URI of a new, empty MLflow SQLite store at ``folder/mlruns/mlflow.db``: a copy of one store made
    once per session by MLflow itself (creating MLflow's tables takes seconds; copying them, milliseconds)."""
    if not _EMPTY_STORE:
        from mlflow.tracking import MlflowClient

        made = Path(tempfile.mkdtemp(prefix="ecgvgg-empty-store-"))
        atexit.register(shutil.rmtree, made, ignore_errors=True)
        MlflowClient(f"sqlite:///{made / 'mlflow.db'}").search_experiments()
        _EMPTY_STORE.append(made / "mlflow.db")
    db = folder / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_EMPTY_STORE[0], db)
    with sqlite3.connect(db) as con:  # MLflow's default experiment keeps its artifacts beside this copy
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(db.parent / "0"),))
    con.close()
    return f"sqlite:///{db}"


@pytest.fixture()
def store(tmp_path, monkeypatch) -> str:
    """A real MLflow SQLite store in a temporary folder, used through MLFLOW_TRACKING_URI."""
    monkeypatch.chdir(tmp_path)
    uri = new_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def runs_in(uri: str) -> list:
    """Every run of every experiment in the store at ``uri``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def invoke_in_new_store(tmp_path_factory, name: str, args: list[str]):
    """Run the ``ecgvgg`` command in-process against a new store in a new folder: ``(folder, uri, result)``."""
    from typer.testing import CliRunner

    from ecgvgg.cli.main import app

    tmp = tmp_path_factory.mktemp(name)
    uri = new_store(tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        result = CliRunner().invoke(app, args)
    return tmp, uri, result


@pytest.fixture(autouse=True)
def mlflow_store_setting_is_restored():
    """Give every test the MLflow store setting it started with (a test may point MLflow at its own store)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    uri, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(uri)
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env


@pytest.fixture(autouse=True)
def no_store_left_in_the_working_directory():
    """Fail a test that leaves an MLflow store (``mlflow.db``) in the directory pytest started from."""
    stray = Path.cwd() / "mlflow.db"
    existed = stray.exists()
    yield
    if not existed:
        assert not stray.exists(), "the test left mlflow.db in the working directory; use the store fixture"


@pytest.fixture(scope="session")
def mixed_frame(sample_frame) -> pd.DataFrame:
    """The bundled sample's rows in a random order (the file is sorted by class)."""
    return sample_frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="session")
def shard_folder(tmp_path_factory, mixed_frame) -> Path:
    """``mixed_frame`` as 4 Parquet shards of row groups of 100 rows (``part-00.parquet`` ...), every class in
    each; the same rows as one file are ``../one.parquet``."""
    import numpy as np

    folder = tmp_path_factory.mktemp("streamed") / "shards"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(mixed_frame)), 4)):
        mixed_frame.iloc[part].to_parquet(folder / f"part-{i:02d}.parquet", index=False, row_group_size=100)
    mixed_frame.to_parquet(folder.parent / "one.parquet", index=False)
    return folder


def assert_served_as_keras(uri: str, run_id: str, beats: pd.DataFrame) -> None:
    """The run's logged pyfunc, given the beats' feature columns, answers as its Keras model does."""
    import mlflow

    from ecgvgg.tracking.store import load_run_model

    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(
        beats.drop(columns=[c for c in ("label", "record", "sample") if c in beats.columns])
    )
    keras_side = load_run_model(uri, run_id).predict_frame(beats)
    pd.testing.assert_frame_equal(served.reset_index(drop=True), keras_side, check_dtype=False, atol=1e-5)


#: Fixtures that train a real network for many steps or run whole studies: a test that uses one is in the
#: slow tier (``pytest -m "not slow"`` leaves it out).
SLOW_FIXTURES = {
    "tiny_run",
    "cv_run",
    "trained",
    "rhythm_run",
    "adapted_run",
    "reference_run",
    "sweep",
    "source_run",
    "folded_model",
    "saved_model",
}
#: Tests that train for many steps or start processes themselves.
SLOW_TESTS = {
    "test_resampled_and_other_formats_get_the_same_labels",
    "test_losses_optimisers_and_schedules_train_a_real_network",
    "test_de_chazal_protocol_tests_on_ds2_records_only",
    "test_signal_free_data_exits_3_and_is_tagged",
    "test_sweep_creates_child_runs_under_one_parent",
    "test_the_returned_models_validation_scores_are_logged_and_listed",
    "test_a_live_run_cannot_be_resumed_and_a_killed_one_is_found_closed_and_resumed",
    "test_resume_returns_the_best_model_of_the_whole_run",
    "test_settings_that_would_fail_late_exit_2_in_one_line_before_any_run",
    "test_the_kaggle_pipeline_runs_a_headerless_csv_ungrouped",
    "test_mlflow_models_serve_answers_beats_with_class_names",
    "test_the_logged_model_is_a_pyfunc_that_takes_beats_as_a_table",
    "test_deterministic_cpu_runs_give_identical_metrics",
    "test_interrupt_marks_run_killed_and_keeps_its_checkpoint",
    "test_resume_refuses_a_finished_run_or_a_changed_config",
    "test_two_concurrent_runs_on_one_store_both_complete",
    "test_two_workers_on_loopback_train_one_model_on_disjoint_shards_in_one_run",
    "test_cross_validation_and_its_fold_ensemble_read_rhythm",
    "test_streamed_test_scores_equal_the_in_memory_ones",
    "test_the_balanced_sampler_streams_the_asked_class_shares_from_this_workers_files",
    "test_short_real_training_beats_chance",
    "test_signal_free_inputs_are_detected_as_collapsed",
    "test_frozen_blocks_keep_their_weights_and_later_blocks_learn",
    "test_a_pruned_trial_ends_finished_tagged_and_without_test_scores",
    "test_two_processes_share_one_study_and_the_best_config_runs",
    "test_fold_ensemble_averages_its_members",
    "test_ungrouped_runs_say_the_score_is_optimistic",
    "test_exports_answer_as_keras_does",
    "test_a_bad_input_is_one_line_on_the_real_terminal_without_tensorflow_chatter",
}


def pytest_collection_modifyitems(config, items):
    """Mark the slow tier: tests in :data:`SLOW_TESTS` and tests that use a fixture of :data:`SLOW_FIXTURES`."""
    for item in items:
        name = getattr(item, "originalname", item.name)
        if name in SLOW_TESTS or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

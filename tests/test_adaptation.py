"""Record adaptation: each record's beats meet the batch normalisation on their own terms."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import DATA, ROOT, TINY_RECORDS, invoke_in_new_store, runs_in, sets
from ecgvgg.cli.main import app
from ecgvgg.core.adaptation import MIN_BEATS, batch_norms, record_adapted, reference_statistics
from ecgvgg.core.records import prepare_records

CV = str(ROOT / "pipelines" / "interpatient_cv.yaml")


def _small_network(seed: int = 0):
    """Two convolutions, each batch-normalised with made-up trained statistics, then a softmax over three classes."""
    import keras

    keras.utils.set_random_seed(seed)
    beat = keras.Input((40, 1))
    x = beat
    for k in (1, 2):
        x = keras.layers.Conv1D(4, 3, padding="same", use_bias=False, name=f"conv{k}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{k}")(x)
        x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(beat, keras.layers.Dense(3, activation="softmax")(x))
    rng = np.random.default_rng(seed)
    for layer in batch_norms(model):
        layer.moving_mean.assign(rng.normal(size=4).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=4).astype("float32"))
    return model


def test_full_adaptation_undoes_a_record_s_gain_and_leaves_the_trained_statistics_alone():
    model = _small_network()
    x = np.random.default_rng(1).normal(size=(64, 40, 1)).astype("float32")
    reference = reference_statistics(model, x)
    assert sorted(reference) == ["bn1", "bn2"] and len(reference["bn1"]["mean"]) == 4
    before = [w.copy() for w in model.get_weights()]
    as_trained = model.predict(x, verbose=0)
    # two records: the training rows themselves, and the same beats recorded at twice the gain
    rows, records = np.concatenate([x, 2 * x]), np.repeat(["a", "b"], len(x))
    adapted = record_adapted(model, rows, records, reference, 1.0)
    np.testing.assert_allclose(adapted[: len(x)], as_trained, atol=1e-5)  # a record like the training rows: unchanged
    np.testing.assert_allclose(adapted[len(x) :], as_trained, atol=1e-3)  # the gain is normalised away
    assert not np.allclose(model.predict(2 * x, verbose=0), as_trained, atol=1e-3)  # without adaptation it is not
    # weight 0 answers as trained; the model keeps its own statistics afterwards
    np.testing.assert_allclose(record_adapted(model, rows, records, reference, 0.0), model.predict(rows, verbose=0), atol=1e-6)
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)
    # half the way: between the two
    half = record_adapted(model, rows, records, reference, 0.5)[len(x) :]
    raw = model.predict(2 * x, verbose=0)
    assert np.abs(half - as_trained).mean() < np.abs(raw - as_trained).mean()
    # a record too short for its statistics answers as trained
    short = record_adapted(model, 2 * x[: MIN_BEATS - 1], np.zeros(MIN_BEATS - 1), reference, 1.0)
    np.testing.assert_allclose(short, model.predict(2 * x[: MIN_BEATS - 1], verbose=0), atol=1e-6)


def test_a_layer_without_reference_statistics_is_refused():
    model = _small_network()
    x = np.zeros((MIN_BEATS, 40, 1), "float32")
    reference = reference_statistics(model, x)
    del reference["bn2"]
    with pytest.raises(ValueError, match=r"\['bn2'\]"):
        record_adapted(model, x, np.zeros(len(x)), reference, 0.5)


@pytest.fixture(scope="module")
def adapted_run(tmp_path_factory):
    """A tiny network trained on the two real record cuts that answers each record with record adaptation."""
    beats, _ = prepare_records(DATA / "records")
    table = tmp_path_factory.mktemp("adaptation") / "beats.parquet"
    beats.to_parquet(table, index=False)
    items = ["training.epochs=4", *TINY_RECORDS, "data.channels=[]", f"data.path={table}", "record_adaptation=0.5"]
    tmp, uri, res = invoke_in_new_store(tmp_path_factory, "adapted_run", ["run", CV, *sets(*items)])
    assert res.exit_code in (0, 3), res.output
    run = runs_in(uri)[0]
    return table, tmp / "mlruns" / "runs" / run.info.run_id / "model.keras"


def test_the_adapted_model_answers_each_record_on_its_own_terms(adapted_run, tmp_path):
    from ecgvgg.core.inference import load_model
    from ecgvgg.core.metrics import confusion

    table, path = adapted_run
    loaded = load_model(path)
    a = loaded.contract.adaptation
    assert a["weight"] == 0.5 and sorted(a["reference"]) == sorted(layer.name for layer in batch_norms(loaded.model))
    beats = pd.read_parquet(table)
    records = beats["record"].to_numpy()
    alone = loaded.predict_proba(beats)  # without the records: the network as trained
    together = loaded.predict_proba(beats, groups=records)
    by_hand = record_adapted(loaded.model, loaded.prepare(beats), records, a["reference"], 0.5)
    np.testing.assert_allclose(together, by_hand, atol=1e-6)
    assert not np.allclose(together, alone, atol=1e-3)
    # evaluate reads the table's record column and scores the adapted answers
    res = CliRunner().invoke(app, ["evaluate", "--model", str(path), str(table), "--json"])
    assert res.exit_code == 0, res.output
    scored = json.loads(res.output[res.output.index("{") :])["confusion_matrix"]
    pred = np.asarray(loaded.classes)[together.argmax(axis=1)]
    assert scored == confusion(beats["label"].to_numpy(), pred, loaded.classes).tolist()
    # an exported file could not adapt: refused in one line, nothing written
    res = CliRunner().invoke(app, ["export", "--model", str(path), "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "record_adaptation 0.5" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_annotate_adapts_to_the_whole_recording(adapted_run):
    from ecgvgg.core.annotate import label, open_recordings, plan_for
    from ecgvgg.core.inference import load_model

    _, path = adapted_run
    loaded = load_model(path)
    rec = open_recordings([DATA / "records" / "209m8"])[0]
    plan = plan_for(rec, loaded.contract)
    plain = replace(loaded, contract=loaded.contract.with_adaptation(0))
    assert plain.contract.adaptation == {}
    adapted, as_trained = label(rec, loaded, plan).beats, label(rec, plain, plan).beats
    p = [f"p_{n}" for n in loaded.class_names]
    assert adapted["sample"].tolist() == as_trained["sample"].tolist()  # the same beats
    assert not np.allclose(adapted[p].to_numpy(), as_trained[p].to_numpy(), atol=1e-3)
    np.testing.assert_allclose(adapted[p].to_numpy().sum(axis=1), 1.0, atol=1e-5)

"""Grad-CAM and export: where a network looks, and the same answers outside Keras (ONNX, SavedModel, LiteRT)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE, runner
from ecgvgg.core.contract import InputContract

REGION = slice(100, 120)


def _contract(classes: int, kind: str = "1d", length: int = 187, **data) -> InputContract:
    shape = {"kind": kind, "method": "fold", "size": None}
    return InputContract(
        list(range(classes)), list("NSVFQ"[:classes]), shape, length, {"features": [f"x{i}" for i in range(length)], **data}
    )


@pytest.fixture(scope="module")
def region_model():
    """A tiny 1D VGG16 trained on synthetic beats whose label depends only on samples 100-119."""
    import keras

    from ecgvgg.core.models import vgg16

    rng = np.random.default_rng(0)
    X = rng.normal(0, 0.3, (1200, 187)).astype(np.float32)
    y = rng.integers(0, 2, len(X))
    X[y == 1, REGION] += 1.5
    keras.utils.set_random_seed(0)
    model = vgg16((187, 1), 2, width=0.0625, dense_units=16, batch_norm=True)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(X[..., None], y, epochs=5, batch_size=64, verbose=0)
    assert history.history["accuracy"][-1] > 0.95  # it learnt the region
    return model, X[:200], y[:200]


@pytest.fixture(scope="module")
def folded_model():
    """An untrained tiny 2D VGG16 on folded beats (14 x 14), dropout on, to check numerics and graphs."""
    import keras

    from ecgvgg.core.models import vgg16

    keras.utils.set_random_seed(1)
    return vgg16((14, 14, 1), 5, width=0.0625, dense_units=16, dropout=0.5)


def test_gradcam_peaks_where_the_label_lives(region_model):
    from ecgvgg.core.explain import gradcam

    model, X, y = region_model
    explained = gradcam(model, X, _contract(2))
    s = explained.saliency
    assert s.shape == (len(X), 187) and s.dtype == np.float32
    varied = s.std(axis=1) > 0  # a beat whose weighted maps are all negative gets a map of zeros
    assert s.min() >= 0 and varied.mean() > 0.9 and np.allclose(s[varied].max(axis=1), 1)
    assert (explained.class_index == y).mean() > 0.95
    profile = s[explained.class_index == 1].mean(axis=0)
    assert 96 <= int(np.argmax(profile)) <= 124  # within half a block-4 cell (8 samples) of samples 100-119
    assert profile[REGION].mean() > 1.5 * np.delete(profile, np.r_[REGION]).mean()


def test_gradcam_of_2d_beats_and_of_a_fold_ensemble(region_model, folded_model):
    from ecgvgg.core.explain import gradcam, target_layer
    from ecgvgg.core.models import fold_ensemble

    model, X, _ = region_model
    assert target_layer(folded_model) == "block3_conv3"  # block 4's maps are 2 x 2 in a 14 x 14 image
    folded = gradcam(folded_model, X[:20], _contract(5, "2d"))
    assert folded.saliency.shape == (20, 187) and 0 <= folded.saliency.min() and folded.saliency.max() <= 1
    gaf = gradcam(
        _gaf_model(), X[:8], InputContract([0, 1, 2, 3, 4], list("NSVFQ"), {"kind": "2d", "method": "gaf", "size": 32}, 187)
    )
    assert gaf.saliency.shape == (8, 187) and gaf.saliency.std(axis=1).min() > 0
    single = gradcam(model, X[:30], _contract(2))
    twice = gradcam(fold_ensemble([model, model]), X[:30], _contract(2))  # the mean of two equal members
    np.testing.assert_allclose(twice.saliency, single.saliency, atol=1e-5)


def _gaf_model():
    import keras

    from ecgvgg.core.models import vgg16

    keras.utils.set_random_seed(2)
    return vgg16((32, 32, 1), 5, width=0.0625, dense_units=16)


def _run_exported(fmt: str, path, x: np.ndarray) -> np.ndarray:
    """Each format through its own runtime, as a user outside ecgvgg would run it."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert not isinstance(session.get_inputs()[0].shape[0], int)  # the batch dimension is dynamic
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # held: its variables go with it
        return loaded.serve(tf.constant(x)).numpy()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    entry = interpreter.get_input_details()[0]
    assert entry["shape_signature"][0] == -1
    interpreter.resize_tensor_input(entry["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("fmt,name", [("onnx", "m.onnx"), ("savedmodel", "m"), ("litert", "m.tflite")])
@pytest.mark.parametrize("which", ["1d", "2d", "ensemble"])
def test_exports_answer_as_keras_does(region_model, folded_model, tmp_path, fmt, name, which):
    from ecgvgg.core.export import contract_path, export_model
    from ecgvgg.core.models import fold_ensemble
    from ecgvgg.core.shapes import reshape

    model, X, _ = region_model
    contract = _contract(2) if which == "1d" else _contract(5, "2d")
    net = {"1d": model, "2d": folded_model, "ensemble": fold_ensemble([folded_model, folded_model])}[which]
    shaped = reshape(X, "1d" if which == "1d" else "2d")
    done = export_model(net, contract, shaped[:64], fmt, tmp_path / name)
    assert done.max_abs_diff <= 1e-4 and (tmp_path / name).exists()
    x = shaped[100:107]  # another batch size than the check's
    np.testing.assert_allclose(_run_exported(fmt, tmp_path / name, x), net(x, training=False), atol=1e-4)
    written = json.loads(contract_path(tmp_path / name).read_text())
    assert InputContract.from_dict(written) == contract
    assert written["export"]["format"] == fmt and written["export"]["input_shape"] == [None, *shaped.shape[1:]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, contract_path(tmp_path / name).name])


def test_no_training_only_layer_reaches_the_onnx_graph(folded_model, tmp_path):
    import onnx

    from ecgvgg.core.export import export_model
    from ecgvgg.core.shapes import to_2d

    assert any("dropout" in layer.name for layer in folded_model.layers)
    x = to_2d(np.random.default_rng(0).random((16, 187), dtype=np.float32))
    export_model(folded_model, _contract(5, "2d"), x, "onnx", tmp_path / "m.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "Conv" in ops and not ops & {
        "Dropout",
        "RandomUniform",
        "RandomNormal",
        "RandomUniformLike",
        "RandomNormalLike",
        "Multinomial",
    }


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """An untrained tiny 5-class 1D model saved with the contract of the bundled sample's table."""
    import keras

    from ecgvgg.core.inference import save_model
    from ecgvgg.core.models import vgg16

    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    contract = _contract(5, label_column="label", group_column="segment", header=True)
    return save_model(vgg16((187, 1), 5, width=0.0625, dense_units=16), path, contract)


def test_explain_command_writes_saliency_rows_and_class_pictures(saved_model, tmp_path):
    from ecgvgg.cli.main import app

    res = runner().invoke(
        app, ["explain", str(SAMPLE), "--model", str(saved_model), "-o", str(tmp_path / "x"), "--per-class", "3"]
    )
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(tmp_path / "x" / "saliency.parquet")
    sample = pd.read_parquet(SAMPLE)
    assert len(frame) == 15 and frame.groupby("label").size().tolist() == [3] * 5
    assert (sample["label"].to_numpy()[frame["row"]] == frame["label"]).all()
    assert list(frame.columns[:5]) == ["row", "label", "prediction", "class_name", "probability"]
    values = frame[[f"saliency_{i}" for i in range(187)]].to_numpy()
    assert values.min() >= 0 and values.max() <= 1
    pictures = {p.name for p in (tmp_path / "x").glob("gradcam_*.png")}
    assert pictures == {f"gradcam_{n}.png" for n in frame["class_name"].unique()}
    res = runner().invoke(
        app, ["explain", str(SAMPLE), "--model", str(saved_model), "-o", str(tmp_path / "y"), "--rows", "0,5-7"]
    )
    assert res.exit_code == 0, res.output
    assert pd.read_parquet(tmp_path / "y" / "saliency.parquet")["row"].tolist() == [0, 5, 6, 7]


@pytest.mark.parametrize(
    "args,says",
    [
        (["explain", str(SAMPLE), "--rows", "0,99999"], "--rows 99999"),
        (["explain", str(SAMPLE), "--rows", "a-b"], "--rows"),
        (["explain", str(SAMPLE), "--layer", "block9_conv1"], "--layer block9_conv1"),
        (["export", "--format", "tflite"], "--format 'tflite'"),
        (["export", "--format", "savedmodel"], "savedmodel export is a folder"),
    ],
)
def test_bad_explain_and_export_requests_are_one_line(saved_model, tmp_path, args, says):
    from ecgvgg.cli.main import app

    out = tmp_path / ("m.onnx" if args[0] == "export" else "x")
    res = runner().invoke(app, [*args, "--model", str(saved_model), "-o", str(out)])
    assert res.exit_code == 2 and says in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists()


def test_export_command_checks_on_bundled_beats_and_refuses_a_difference(saved_model, tmp_path):
    from ecgvgg.cli.main import app

    res = runner().invoke(app, ["export", "--model", str(saved_model), "--format", "onnx", "-o", str(tmp_path / "a.onnx")])
    assert res.exit_code == 0 and "256 bundled sample beats" in res.output, res.output
    diff = json.loads((tmp_path / "a.json").read_text())["export"]["max_abs_diff_from_keras"]
    assert 0 < diff <= 1e-4  # ONNX Runtime's kernels round differently from TensorFlow's
    res = runner().invoke(
        app,
        [
            "export",
            "--model",
            str(saved_model),
            "--format",
            "onnx",
            "-o",
            str(tmp_path / "b.onnx"),
            "--tolerance",
            f"{diff / 2:.3g}",
        ],
    )
    assert res.exit_code == 1 and "differ from the Keras model's" in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.onnx"]  # nothing of b is left

"""VGG16-style builders: Keras' layer names, output shapes, the width knob and short inputs."""

from __future__ import annotations

import numpy as np
import pytest

from ecgvgg.core.models import vgg16

EXPECTED = [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]


def _names(model) -> list[str]:
    return [layer.name for layer in model.layers]


def _conv_params(model) -> int:
    return sum(layer.count_params() for layer in model.layers if "_conv" in layer.name)


@pytest.mark.parametrize(("shape", "name"), [((187, 1), "vgg16_1d"), ((14, 14, 1), "vgg16_2d")])
def test_layer_names_follow_keras_vgg16(shape, name):
    model = vgg16(shape, 5, width=0.125, dense_units=16)
    assert model.name == name  # one builder: 1D or 2D from the input shape
    names = _names(model)
    assert [n for n in names if "_conv" in n] == EXPECTED
    assert [n for n in names if n.endswith("_pool")] == [f"block{b}_pool" for b in range(1, 6)]
    assert names[-3:] == ["fc1", "fc2", "predictions"]
    assert model.output_shape == (None, 5)
    assert model.get_layer("predictions").activation.__name__ == "softmax"


def test_same_names_in_1d_and_2d():
    assert _names(vgg16(width=0.125, dense_units=8)) == _names(vgg16((14, 14, 1), width=0.125, dense_units=8))


def test_width_quarter_cuts_convolution_parameters_about_16x():
    full = _conv_params(vgg16(include_top=False))
    quarter = _conv_params(vgg16(include_top=False, width=0.25))
    assert 14 < full / quarter < 17


def test_full_size_1d_model_matches_the_paper_scale():
    # 6 x 512 flattened features (same-padded pools) -> 4096 -> 4096 -> 5
    assert 33e6 < vgg16().count_params() < 35e6


def test_pooling_never_shrinks_a_dimension_to_zero():
    m1 = vgg16((187, 1), width=0.125, include_top=False)
    assert m1.output_shape == (None, 6, 64)
    m2 = vgg16((14, 14, 1), width=0.125, include_top=False)
    assert m2.output_shape == (None, 1, 1, 64)
    tiny = vgg16((5, 1), width=0.125, dense_units=4)
    assert tiny.predict(np.zeros((2, 5, 1), np.float32), verbose=0).shape == (2, 5)


def test_include_top_false_with_pooling_and_batch_norm():
    m = vgg16(width=0.125, include_top=False, pooling="avg", batch_norm=True)
    assert m.output_shape == (None, 64)
    assert "block1_conv1_bn" in _names(m)


def test_weights_from_a_saved_file(tmp_path):
    a = vgg16(width=0.125, dense_units=8)
    path = tmp_path / "w.weights.h5"
    a.save_weights(path)
    b = vgg16(width=0.125, dense_units=8, weights=path)
    x = np.random.default_rng(0).random((3, 187, 1), dtype=np.float32)
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), rtol=1e-5)
    with pytest.raises(FileNotFoundError):
        vgg16(width=0.125, weights=tmp_path / "missing.h5")


def test_bad_knobs():
    with pytest.raises(ValueError, match="input shape of 2 .* or 3"):
        vgg16((14, 14, 3, 1))
    with pytest.raises(TypeError):
        vgg16((187, 1), 5, 0.5)  # knobs are keyword-only, as in keras.applications.VGG16
    with pytest.raises(ValueError, match="pooling"):
        vgg16(include_top=False, pooling="mean")

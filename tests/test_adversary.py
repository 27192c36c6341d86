"""Subject-invariant training: the reversed gradient, the record head in training only, the config's refusals."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest
import tensorflow as tf

from ecgvgg.core.adversary import SubjectInvariant, reverse_gradient
from ecgvgg.core.config import TrainingConfig
from ecgvgg.core.models import vgg16
from ecgvgg.core.training import fit, setup_device


def test_the_reversal_layer_passes_values_and_negates_gradients():
    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = reverse_gradient(x)
        loss = tf.reduce_sum(y * tf.constant([[2.0, 3.0, 4.0]]))
    assert y.numpy().tolist() == x.numpy().tolist()
    assert tape.gradient(loss, x).numpy().tolist() == [[-2.0, -3.0, -4.0]]


@pytest.fixture(scope="module")
def segment_splits(real_splits, sample_xyg):
    """The shared real splits with each training row's segment code (-1 for ADASYN's rows)."""
    g = sample_xyg[2]
    codes = np.unique(np.asarray(g)[real_splits.train_index], return_inverse=True)[1]
    synthetic = len(real_splits.y_train) - len(codes)
    assert synthetic > 0  # ADASYN made rows that belong to no segment
    return replace(real_splits, train_groups=np.r_[codes, np.full(synthetic, -1)].astype(np.int32))


def test_training_with_a_record_head_returns_and_saves_the_network_alone(segment_splits, tmp_path):
    setup_device(seed=0, mixed_precision=False)
    net = vgg16(width=0.0625, dense_units=16)
    result = fit(
        net,
        segment_splits,
        TrainingConfig(epochs=1, batch_size=128, early_stopping_patience=0, subject_adversary=0.5),
        checkpoint_path=tmp_path / "best.keras",
    )
    assert result.model is net and not any("record" in layer.name for layer in net.layers)
    losses = result.history["record_loss"]
    assert len(losses) == 1 and 0 < losses[0] < 20  # the record loss was computed on the real segments
    saved = keras.models.load_model(tmp_path / "best.keras")  # the checkpoint holds the network (one epoch: the last)
    assert [w.shape for w in saved.get_weights()] == [w.shape for w in net.get_weights()]
    beats = segment_splits.X_val[:16]
    np.testing.assert_allclose(saved.predict(beats, verbose=0), net.predict(beats, verbose=0), atol=1e-5)


def test_rows_of_no_record_add_nothing_to_the_record_loss(segment_splits):
    net = vgg16(width=0.0625, dense_units=8)
    model = SubjectInvariant(net, records=3, weight=1.0)
    model.compile("adam", loss="sparse_categorical_crossentropy")
    x = segment_splits.X_train[:32]
    y = segment_splits.y_train[:32]
    logs = model.train_on_batch((x, np.full(32, -1, dtype=np.int32)), y, return_dict=True)
    assert logs["record_loss"] == 0.0
    logs = model.train_on_batch((x, np.zeros(32, dtype=np.int32)), y, return_dict=True)
    assert logs["record_loss"] > 0.0


def test_a_record_head_trains_under_mixed_precision(segment_splits):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = vgg16(width=0.0625, dense_units=8)
        model = SubjectInvariant(net, records=3, weight=1.0)
        model.compile(keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")  # loss-scaled by Keras
        before = [w.numpy().copy() for w in net.trainable_weights]
        x, y = segment_splits.X_train[:64], segment_splits.y_train[:64]
        for _ in range(3):  # a first step may be skipped while the loss scale settles
            logs = model.train_on_batch((x, np.arange(64, dtype=np.int32) % 3), y, return_dict=True)
        moved = max(float(np.abs(b - w.numpy()).max()) for b, w in zip(before, net.trainable_weights))
        assert np.isfinite(logs["loss"]) and np.isfinite(logs["record_loss"])
        assert moved > 1e-4  # the gradients were unscaled once, not divided by the loss scale
    finally:
        keras.mixed_precision.set_global_policy("float32")

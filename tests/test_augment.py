"""Augmentation of real training beats, the loss and optimiser choices, trained end to end."""

from __future__ import annotations

import numpy as np
import pytest

from ecgvgg.core.augment import Augment, augment_batch
from ecgvgg.core.config import TrainingConfig
from ecgvgg.core.models import vgg16
from ecgvgg.core.folds import split_then_oversample
from ecgvgg.core.shapes import to_1d
from ecgvgg.core.inputs import make_dataset
from ecgvgg.core.training import fit, setup_device


@pytest.fixture(scope="module")
def beats(sample_xyg):
    """64 real beats shaped (64, 187, 1) with their labels."""
    X, y, _ = sample_xyg
    return to_1d(X[:: len(X) // 64][:64]), y[:: len(X) // 64][:64]


def _support_length(x: np.ndarray) -> np.ndarray:
    nz = x[..., 0] != 0
    return x.shape[1] - np.argmax(nz[:, ::-1], axis=1)


def test_a_shift_moves_each_beat_whole_and_fills_with_zeros(beats):
    import tensorflow as tf

    X, y = beats
    out = augment_batch(tf.constant(X), tf.constant(y), Augment(shift=5))[0].numpy()
    moved = 0
    for before, after in zip(X[..., 0], out[..., 0]):
        matches = [
            k for k in range(-5, 6) if np.allclose(after, np.roll(before, k) * (np.arange(187) >= k) * (np.arange(187) < 187 + k))
        ]
        assert matches, "each output is its beat moved by at most 5 samples"
        moved += matches[0] != 0
    assert moved > 32  # most beats moved


def test_a_stretch_resamples_the_beat_and_keeps_its_padding_zero(beats):
    import tensorflow as tf

    X, y = beats
    out = augment_batch(tf.constant(X), tf.constant(y), Augment(stretch=0.2))[0].numpy()
    ratio = _support_length(out) / _support_length(X)
    assert np.all((ratio > 0.78) & (ratio < 1.22)) and ratio.std() > 0.02
    assert np.all(out.min(axis=1) >= X.min(axis=1) - 1e-6) and np.all(out.max(axis=1) <= X.max(axis=1) + 1e-6)
    assert np.all(out[:, 0] == X[:, 0])  # the R peak at sample 0 stays in place


def test_baseline_wander_is_slow_bounded_and_leaves_the_padding_alone(beats):
    import tensorflow as tf

    X, y = beats
    out = augment_batch(tf.constant(X), tf.constant(y), Augment(wander=0.1))[0].numpy()
    drift = (out - X)[..., 0]
    pad = X[..., 0] == 0
    tail = np.arange(187)[None, :] >= _support_length(X)[:, None]
    assert np.all(drift[tail & pad] == 0)
    assert np.abs(drift).max() <= 0.1 + 1e-6 and np.abs(drift).mean() > 0.005
    inside = ~tail[:, 2:] & ~tail[:, :-2]
    assert np.abs(np.diff(drift, 2, axis=1))[inside].max() < 1e-3  # a sinusoid of at most half a cycle


def test_mixup_blends_pairs_of_beats_and_their_labels(beats):
    X, y = beats
    x, t = next(iter(make_dataset(X, y, 64, shuffle=False, augment=Augment(mixup=0.4), num_classes=5)))
    x, t = x.numpy(), t.numpy()
    np.testing.assert_allclose(t.sum(axis=1), 1, atol=1e-6)
    lam = t.max(axis=1)
    assert np.all(lam >= 0.5 - 1e-6) and lam.min() < 0.99  # blended, the first beat keeps the larger share
    assert np.array_equal(np.argmax(t, axis=1)[lam > 0.5 + 1e-6], y[lam > 0.5 + 1e-6])
    onehot = np.eye(5)[y]
    for i in np.flatnonzero(lam < 0.99)[:8]:  # the beat is the same blend of two real beats as its label
        partners = [
            j
            for j in range(64)
            if np.allclose(t[i], lam[i] * onehot[i] + (1 - lam[i]) * onehot[j], atol=1e-5)
            and np.allclose(x[i], lam[i] * X[i] + (1 - lam[i]) * X[j], atol=1e-5)
        ]
        assert partners


@pytest.mark.parametrize(
    "settings",
    [
        dict(
            loss="focal",
            label_smoothing=0.05,
            optimizer="adamw",
            schedule="cosine",
            warmup_epochs=1,
            augment=Augment(shift=3, stretch=0.05, wander=0.05),
        ),
        dict(schedule="cosine", augment=Augment(mixup=0.2)),
    ],
    ids=["focal-smoothing-adamw-cosine-warmup", "cross-entropy-mixup-cosine"],
)
def test_losses_optimisers_and_schedules_train_a_real_network(sample_xyg, settings):
    X, y, g = sample_xyg
    splits = split_then_oversample(X, y, groups=g, sampler="random", seed=0).map_x(to_1d)
    setup_device(seed=0, mixed_precision=False)
    model = vgg16(width=0.125, dense_units=64)
    settings = dict(settings)
    augment = settings.pop("augment")
    training = TrainingConfig(epochs=5, batch_size=64, early_stopping_patience=0, learning_rate=2e-3, **settings)
    result = fit(model, splits, training, class_names=list("NSVFQ"), augment=augment)
    assert result.epochs_run == 5 and np.all(np.isfinite(result.history["loss"]))
    assert max(result.history["val_macro_f1"]) > 0.4  # chance is about 0.2
    opt = model.optimizer
    assert type(opt).__name__ == ("AdamW" if settings.get("optimizer") == "adamw" else "Adam")
    final_rate = float(opt.learning_rate.numpy())
    assert final_rate < 2e-3 / 4  # cosine decay over the 5 epochs


def test_time_axis_augmentation_is_not_applied_to_2d_input_and_says_so(sample_frame):
    from pathlib import Path

    from ecgvgg.core.config import load_config
    from ecgvgg.core.dataset import prepare
    from ecgvgg.core.study import augment_spec

    seed = Path(__file__).parents[1] / "pipelines" / "adasyn_vgg.yaml"
    flat = load_config(seed)
    assert augment_spec(flat) == Augment(scale=0.1, noise=0.01, shift=5, wander=0.05)  # the shipped 1D defaults
    folded = load_config(seed, ["input.kind=2d"])
    with pytest.warns(UserWarning, match="training.augment_shift, training.augment_wander act on 1D beats only"):
        prepare(folded)
    assert augment_spec(folded) == Augment(scale=0.1, noise=0.01)

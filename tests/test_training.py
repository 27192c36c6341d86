"""Training on real beats: it learns, it notices collapse, and its class weights come from pre-oversampling counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from ecgvgg.core.config import TrainingConfig
from ecgvgg.core.models import vgg16
from ecgvgg.core.class_weights import balanced_class_weight
from ecgvgg.core.training import fit, resolve_class_weight, setup_device


def test_short_real_training_beats_chance(real_splits, tmp_path):
    setup_device(seed=0, mixed_precision=False)
    model = vgg16(width=0.125, dense_units=64)
    epochs_seen = []
    result = fit(
        model,
        real_splits,
        TrainingConfig(epochs=6, batch_size=64, early_stopping_patience=0),
        class_names=list("NSVFQ"),
        checkpoint_path=tmp_path / "best.keras",
        on_epoch=lambda e, logs: epochs_seen.append(logs["val_macro_f1"]),
    )
    assert len(epochs_seen) == 6 == result.epochs_run
    assert max(result.history["val_macro_f1"]) > 0.5  # chance is about 0.2 for 5 classes
    assert set(result.history) >= {"val_f1_N", "val_recall_F", "val_precision_Q", "val_loss", "loss"}
    assert (tmp_path / "best.keras").is_file()
    assert result.best_epoch == 6  # without early stopping the last epoch's model is returned, and reported
    assert result.val_scores["macro_f1"] == pytest.approx(result.history["val_macro_f1"][-1], abs=1e-6)


def test_signal_free_inputs_are_detected_as_collapsed(real_splits):
    setup_device(seed=0, mixed_precision=False)
    zeros = real_splits.map_x(np.zeros_like)
    model = vgg16(width=0.0625, dense_units=8)
    result = fit(
        model,
        zeros,
        TrainingConfig(epochs=3, batch_size=128, collapse_patience=2, early_stopping_patience=0, stop_on_collapse=True),
    )
    assert result.collapsed
    assert "predicts class" in result.collapse_reason or "recall" in result.collapse_reason


def test_balanced_weights_come_from_counts_before_oversampling(real_splits):
    before = real_splits.counts_before
    y_before = np.repeat(list(before), list(before.values()))
    expected = compute_class_weight("balanced", classes=np.arange(5), y=y_before)
    with pytest.warns(UserWarning, match="both corrections apply"):
        weights = resolve_class_weight("balanced", real_splits)
    np.testing.assert_allclose([weights[c] for c in range(5)], expected)
    assert weights[3] > 5 * weights[0]  # F is rare before oversampling, not after
    assert resolve_class_weight("auto", real_splits) is None  # oversampled: do not correct twice
    assert balanced_class_weight({0: 10, 1: 0, 2: 5}) == {0: 0.75, 2: 1.5}


def test_augmentation_perturbs_training_batches_only(real_splits):
    from ecgvgg.core.augment import Augment
    from ecgvgg.core.inputs import make_dataset

    X, y = real_splits.X_train[:64], real_splits.y_train[:64]
    plain = next(iter(make_dataset(X, y, 64, shuffle=False)))
    aug = next(iter(make_dataset(X, y, 64, shuffle=False, augment=Augment(scale=0.2, noise=0.01))))
    np.testing.assert_array_equal(plain[0].numpy(), X)
    np.testing.assert_array_equal(aug[1].numpy(), y)
    diff = aug[0].numpy() - X
    assert diff.shape == X.shape and 0 < np.abs(diff).mean() < 0.2


def test_collapse_rules_on_predictions():
    from ecgvgg.core.metrics import collapse_reason, zero_recall

    y = np.array([0] * 90 + [1] * 5 + [2] * 5)
    assert "predicts class N for 99.0%" in collapse_reason(y, np.r_[np.zeros(99), 1], [0, 1, 2], list("NSV"))
    never_s = np.r_[np.zeros(95), np.full(5, 2)]
    assert zero_recall(y, never_s, [0, 1, 2], list("NSV")) == ["S"]
    assert collapse_reason(y, never_s, [0, 1, 2], list("NSV")) == "never predicts class(es) S (5 rows)"
    # S is predicted (for N rows) but never right: recall 0, which only check_recall calls a collapse
    wrong_s = np.r_[np.ones(1), np.zeros(94), np.full(5, 2)]
    assert collapse_reason(y, wrong_s, [0, 1, 2], list("NSV"), check_recall=False) is None
    assert collapse_reason(y, wrong_s, [0, 1, 2], list("NSV")) == "recall is 0 for class(es) S"
    assert collapse_reason(y, y, [0, 1, 2]) is None


def test_an_epoch_hook_that_answers_a_reason_stops_training_there(real_splits):
    setup_device(seed=0, mixed_precision=False)
    seen = []

    def hook(epoch, logs):
        seen.append(epoch)
        return "pruned at epoch 2" if epoch == 1 else None

    result = fit(
        vgg16(width=0.0625, dense_units=8),
        real_splits,
        TrainingConfig(epochs=6, batch_size=256, early_stopping_patience=0),
        on_epoch=hook,
    )
    assert seen == [0, 1] and result.epochs_run == 2  # no exception: training ends after the epoch that asked
    assert result.stopped_by == "pruned at epoch 2"

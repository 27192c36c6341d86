"""Split first, oversample the training split only: no leaks, untouched val/test, balanced training."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ecgvgg.core.errors import DataError
from ecgvgg.core.folds import split_then_oversample
from ecgvgg.core.resampling import make_sampler


def _row_keys(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(a)}


@pytest.mark.parametrize("sampler", ["adasyn", "smote", "random", "none"])
def test_no_test_or_validation_row_or_group_reaches_training(sample_xyg, sampler):
    X, y, g = sample_xyg
    s = split_then_oversample(X, y, groups=g, sampler=sampler, seed=1)
    train_groups = set(g.iloc[s.train_index])
    assert not train_groups & set(g.iloc[s.val_index])
    assert not train_groups & set(g.iloc[s.test_index])
    assert not set(g.iloc[s.val_index]) & set(g.iloc[s.test_index])
    assert len(set(s.train_index) | set(s.val_index) | set(s.test_index)) == len(y)  # nothing dropped
    held_out = _row_keys(X.to_numpy()[np.r_[s.val_index, s.test_index]])
    assert not _row_keys(s.X_train) & held_out


def test_validation_and_test_keep_original_rows_and_counts(sample_xyg):
    X, y, g = sample_xyg
    s = split_then_oversample(X, y, groups=g, sampler="adasyn")
    np.testing.assert_array_equal(s.X_test, X.to_numpy()[s.test_index])
    np.testing.assert_array_equal(s.y_val, y.to_numpy()[s.val_index])
    for split, idx in (("test", s.test_index), ("val", s.val_index)):
        expected = {c: int(np.sum(y.to_numpy()[idx] == c)) for c in range(5)}
        assert s.counts[split] == expected
    assert s.counts_before == {c: int(np.sum(y.to_numpy()[s.train_index] == c)) for c in range(5)}
    assert sum(s.counts["test"].values()) == pytest.approx(0.2 * len(y), rel=0.35)


def test_training_split_is_balanced_after_adasyn(sample_xyg):
    X, y, g = sample_xyg
    s = split_then_oversample(X, y, groups=g, sampler="adasyn")
    after = np.array(list(s.counts_after.values()))
    before = np.array(list(s.counts_before.values()))
    assert before.max() / before.min() > 5  # really imbalanced to begin with
    assert after.max() / after.min() < 1.1
    assert s.X_train.dtype == np.float32 and len(s.X_train) == after.sum()
    # the original training rows are all still there
    assert _row_keys(X.to_numpy()[s.train_index]) <= _row_keys(s.X_train)


def test_ungrouped_split_is_stratified(sample_xyg):
    X, y, _ = sample_xyg
    s = split_then_oversample(X, y, sampler="none", test_size=0.25, val_size=0.15)
    for c in range(5):
        share = s.counts["test"][c] / sum(s.counts["test"].values())
        assert share == pytest.approx(np.mean(y == c), abs=0.01)


def test_adasyn_failure_falls_back_to_smote_with_a_warning():
    rng = np.random.default_rng(0)
    # class 1 lies far from class 0: ADASYN finds no majority neighbours for it
    X = np.vstack([rng.normal(0, 1, (200, 8)), rng.normal(50, 0.1, (20, 8)), rng.normal(0, 1, (4, 8))])
    y = np.r_[np.zeros(200), np.ones(20), np.full(4, 2)].astype(int)
    with pytest.warns(UserWarning) as caught:  # every warning is asserted: none leaks into the suite's summary
        s = split_then_oversample(X, y, sampler="adasyn", test_size=0.2, val_size=0.2)
    said = sorted(str(w.message) for w in caught)
    assert len(said) == 2 and "ADASYN cannot oversample class 1" in said[0] and "SMOTE" in said[0]
    assert "ADASYN cannot oversample class 2 (it has 2 rows" in said[1]  # the 4-row class keeps 2 for training
    counts = np.array(list(s.counts_after.values()))
    assert counts.max() / counts.min() < 1.1


def test_class_smaller_than_neighbours_falls_back():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(0, 1, (100, 6)), rng.normal(0.5, 1, (5, 6))])
    y = np.r_[np.zeros(100), np.ones(5)].astype(int)
    with pytest.warns(UserWarning, match=r"class 1 \(it has \d rows, not more than n_neighbors=5\)"):
        s = split_then_oversample(X, y, sampler="adasyn", test_size=0.2, val_size=0.2)
    assert s.counts_after[1] == s.counts_after[0]


def test_smote_on_a_class_smaller_than_k_falls_back_too():
    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(0, 1, (80, 6)), rng.normal(1, 1, (30, 6)), rng.normal(2, 1, (6, 6))])
    y = np.r_[np.zeros(80), np.ones(30), np.full(6, 2)].astype(int)
    with pytest.warns(UserWarning, match=r"SMOTE cannot oversample class 2 \(it has \d rows, not more than k_neighbors=5\)"):
        s = split_then_oversample(X, y, sampler="smote", test_size=0.2, val_size=0.2)
    assert len(set(s.counts_after.values())) == 1


@pytest.mark.parametrize("strategy", [{1: 120, 2: 90, 3: 30}, "not majority"])
def test_the_fallback_reaches_the_counts_the_strategy_asks_for(strategy):
    from ecgvgg.core.folds import oversample_fold

    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(0, 1, (210, 6)), rng.normal(1, 1, (40, 6)), rng.normal(2, 1, (30, 6)), rng.normal(3, 1, (4, 6))])
    y = np.r_[np.zeros(210), np.ones(40), np.full(30, 2), np.full(4, 3)].astype(int)
    rows = np.arange(len(y))
    with pytest.warns(UserWarning) as caught:
        s = oversample_fold(
            X, y, rows, rows[:0], rows[:0], sampler="adasyn", classes=range(4), sampler_params={"sampling_strategy": strategy}
        )
    expected = {0: 210, 1: 120, 2: 90, 3: 30} if isinstance(strategy, dict) else {0: 210, 1: 210, 2: 210, 3: 210}
    assert s.counts_after[0] == 210 and s.counts_after[3] == expected[3]  # SMOTE's fallback is exact
    for c in (1, 2):  # ADASYN generates about the asked number (it adapts to each row's neighbours)
        assert s.counts_after[c] == pytest.approx(expected[c], rel=0.05)
    named = [str(w.message) for w in caught if "cannot oversample" in str(w.message)]
    assert named and all("class 3" in m for m in named)  # only the class treated differently


def test_too_few_rows_or_groups_and_single_class_are_data_errors(sample_xyg):
    X, y, g = sample_xyg
    keep = (y != 3) | (g.isin(g[y == 3].unique()[:2]))
    with pytest.raises(DataError, match="class 3 has only 2 groups"):
        split_then_oversample(X[keep], y[keep], groups=g[keep])
    with pytest.raises(DataError, match="at least two classes"):
        split_then_oversample(X[y == 0], y[y == 0])


def test_sampler_by_name_and_params():
    assert make_sampler("none") is None
    assert make_sampler("adasyn", n_neighbors=3).n_neighbors == 3
    with pytest.raises(ValueError, match="unknown sampler 'adasin'"):
        make_sampler("adasin")
    with pytest.raises(ValueError, match="sampler 'smote'"):
        make_sampler("smote", bogus=1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(counts=[10, 10, 10], grouped=True, sampler="adasyn", seed=10)  # once asked for more folds than a class's rows
@given(
    counts=st.lists(st.integers(min_value=3, max_value=60), min_size=2, max_size=5),
    grouped=st.booleans(),
    sampler=st.sampled_from(["adasyn", "smote", "random", "none"]),
    seed=st.integers(0, 1000),
)
def test_property_random_class_mixes_never_leak_or_crash(counts, grouped, sampler, seed):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    X = rng.normal(y[:, None], 1.0, (len(y), 12)).astype(np.float32)
    X[:, 0] = np.arange(len(y))  # every original row is unique
    groups = None
    if grouped:  # groups of up to 3 beats, never mixing classes
        groups = np.concatenate([[f"{c}-{i // 3}" for i in range(n)] for c, n in enumerate(counts)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            s = split_then_oversample(X, y, groups=groups, sampler=sampler, seed=seed)
        except DataError as exc:  # only a clear refusal is allowed, never a crash
            assert any(m in str(exc) for m in ("needs at least 3", "no rows in the training split", "too few"))
            return
    held_out = np.r_[s.val_index, s.test_index]
    assert not set(s.train_index) & set(held_out)
    assert not set(X[held_out, 0]) & set(s.X_train[:, 0])  # no held-out row, no copy of one
    if groups is not None:
        assert not set(groups[s.train_index]) & set(groups[held_out])
    assert s.counts["test"] == {c: int(np.sum(y[s.test_index] == c)) for c in range(len(counts))}
    assert set(np.unique(s.y_train)) == set(range(len(counts)))


def test_the_balanced_sampler_draws_batches_with_the_asked_class_shares():
    from ecgvgg.core.resampling import balanced_proportions
    from ecgvgg.core.inputs import make_dataset

    rng = np.random.default_rng(0)
    y = rng.choice(3, 5000, p=[0.9, 0.08, 0.02]).astype(np.int64)
    X = np.arange(len(y), dtype=np.float32)[:, None]  # each row's value is its position
    with pytest.warns(UserWarning, match=r"classes \[4\] have no training rows"):
        shares = balanced_proportions(y, {"proportions": {0: 2, 1: 1, 2: 1, 4: 1}})
    assert shares == {0: 0.5, 1: 0.25, 2: 0.25}
    ds = make_dataset(X, y, 256, shuffle=True, seed=0, proportions=shares)
    labels, rows = [], []
    for _ in range(2):  # two epochs of len(y) draws each
        for xb, yb in ds:
            labels.append(yb.numpy())
            rows.append(xb.numpy()[:, 0].astype(int))
    labels, rows = np.concatenate(labels), np.concatenate(rows)
    assert len(labels) == 2 * len(y)
    for c, p in shares.items():
        assert abs(np.mean(labels == c) - p) < 4 * np.sqrt(p * (1 - p) / len(labels))  # within sampling error
    assert (y[rows] == labels).all()  # real rows with their own labels
    assert len(np.unique(rows[labels == 2])) == np.sum(y == 2)  # the rare class's rows all come round


@pytest.mark.parametrize(
    "params,says",
    [
        ({"k_neighbors": 3}, "takes only 'proportions'"),
        ({"proportions": {0: -1}}, "weight >= 0"),
        ({"proportions": {0: 0}}, "sum to 0"),
    ],
)
def test_bad_balanced_sampler_settings_are_refused(params, says):
    from ecgvgg.core.resampling import make_sampler

    with pytest.raises(ValueError, match=says):
        make_sampler("balanced", **params)


def test_balanced_batches_and_capped_epochs_are_not_combined():
    from pydantic import ValidationError

    from ecgvgg.core.config import ResamplingConfig

    with pytest.raises(ValidationError, match="max_per_class: not with sampler 'balanced'"):
        ResamplingConfig(sampler="balanced", max_per_class=100)

"""Split first, then oversample the training part only.

A study's folds are planned once, as row positions (:func:`plan`: one fold for a single split,
K for cross-validation), and each fold's arrays are made only when it trains
(:func:`materialise`). This module is the only caller of the oversampler
(:func:`ecgvgg.core.resampling.oversample`), and it hands it nothing but a training part already split
off: validation and test keep their original rows and class counts, so no synthetic beat built
from a test beat, and no beat of a test group, can reach training. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from ecgvgg.core.data import class_counts
from ecgvgg.core.errors import ConfigError, DataError
from ecgvgg.core.resampling import Sampler, Splits, oversample

if TYPE_CHECKING:
    from ecgvgg.core.config import PipelineConfig


class Fold(NamedTuple):
    """Row positions of one fold's training, validation and test parts (nothing resampled yet)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def plan(
    cfg: PipelineConfig, y: pd.Series | np.ndarray, groups: pd.Series | np.ndarray | None, train_only: int = 0
) -> list[Fold]:
    """The configured study's folds: one for a single split (random, grouped or de Chazal's), K with ``split.folds``.

    Raises DataError or ConfigError when the classes and groups cannot fill the split.
    """
    s, classes = cfg.split, cfg.data.classes
    if s.protocol == "de_chazal":
        from ecgvgg.core.records import DS1, DS2

        if groups is None:
            raise ConfigError("split.protocol: de_chazal needs data.group_column naming the record column")
    grouping = groups if cfg.grouped_split else None
    if s.folds:
        folds = cv_folds(
            y, folds=s.folds, groups=grouping, val_size=s.val_size, seed=s.seed, classes=classes, train_only=train_only
        )
    else:
        protocol = {"test_groups": DS2, "train_groups": DS1} if s.protocol == "de_chazal" else {}
        folds = [
            split_indices(
                y,
                groups=grouping,
                test_size=s.test_size,
                val_size=s.val_size,
                seed=s.seed,
                classes=classes,
                train_only=train_only,
                **protocol,
            )
        ]
    small = np.int32 if len(y) < 2**31 else np.int64  # the folds live as long as the study: 4 bytes a row each
    return [Fold(*(part.astype(small, copy=False) for part in fold)) for fold in folds]


def materialise(cfg: PipelineConfig, X: np.ndarray, y: np.ndarray, fold: Fold) -> Splits:
    """The arrays of ``fold`` with its training part oversampled as ``resampling`` says.

    Streamed beats (``X`` an :class:`ecgvgg.core.stream.Shards`) give lazy views of each part, in row
    order: nothing is read here, and nothing is oversampled (the ``balanced`` sampler draws batches).
    """
    r = cfg.resampling
    if not isinstance(X, np.ndarray):
        in_order = Fold(*(X[part].positions for part in fold))  # sorted as the views read them, copied only if not
        return _streamed_fold(X, np.asarray(y), in_order, r.sampler, cfg.data.classes)
    return oversample_fold(X, y, *fold, sampler=r.sampler, sampler_params=r.params, seed=cfg.split.seed, classes=cfg.data.classes)


def split_then_oversample(
    X: pd.DataFrame | np.ndarray,
    y: pd.Series | np.ndarray,
    *,
    groups: pd.Series | np.ndarray | None = None,
    test_size: float = 0.2,
    val_size: float = 0.1,
    sampler: str | Sampler = "adasyn",
    sampler_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    test_groups: Collection[str] | None = None,
    train_groups: Collection[str] | None = None,
    train_only: int = 0,
) -> Splits:
    """Split stratified (grouped when ``groups`` is given), then oversample the training split only.

    ``test_size`` and ``val_size`` are fractions of all rows. ``sampler`` is a name from
    :data:`ecgvgg.core.resampling.SAMPLERS` (with ``sampler_params`` passed to it) or any object with
    ``fit_resample``. ADASYN failures on a class fall back to SMOTE for that class, with a warning.
    The split itself is :func:`split_indices` (de Chazal's ``test_groups``, ``train_only`` rows).
    """
    Xa = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    ya = np.asarray(y).astype(np.int64)
    if Xa.ndim != 2:
        raise DataError(f"X must be 2-D (beats x samples), got shape {Xa.shape}")
    if len(Xa) != len(ya):
        raise DataError(f"X has {len(Xa)} rows, y {len(ya)}")
    classes = tuple(int(c) for c in (classes if classes is not None else np.unique(ya)))
    fold = split_indices(
        ya,
        groups=groups,
        test_size=test_size,
        val_size=val_size,
        seed=seed,
        classes=classes,
        test_groups=test_groups,
        train_groups=train_groups,
        train_only=train_only,
    )
    return oversample_fold(Xa, ya, *fold, sampler=sampler, sampler_params=sampler_params, seed=seed, classes=classes)


def split_indices(
    y: pd.Series | np.ndarray,
    *,
    groups: pd.Series | np.ndarray | None = None,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    test_groups: Collection[str] | None = None,
    train_groups: Collection[str] | None = None,
    train_only: int = 0,
) -> Fold:
    """Row positions of a stratified (grouped when ``groups`` is given) train/validation/test split.

    With ``test_groups`` (e.g. the DS2 records) the test part is exactly those groups and
    validation is carved by group from ``train_groups`` (default: all other groups); rows in
    neither are left out, with a warning that counts them. The last ``train_only`` rows (e.g. a
    second database) join the training part and are never validation or test rows.
    """
    ya = np.asarray(y).astype(np.int64)
    ga = None if groups is None else np.asarray(groups)
    if ga is not None and len(ga) != len(ya):
        raise DataError(f"y has {len(ya)} rows, groups {len(ga)}")
    if not (0 < test_size < 1 and 0 < val_size < 1 and test_size + val_size < 1):
        raise ValueError(f"need 0 < test_size, val_size and test_size + val_size < 1; got {test_size}, {val_size}")
    classes = tuple(int(c) for c in (classes if classes is not None else np.unique(ya)))
    rows = np.arange(len(ya) - train_only)
    if test_groups is None:
        _check_splittable(ya[rows], None if ga is None else ga[rows], classes)
        rest, test = _split(rows, ya, ga, test_size, seed)
        train, val = _split(rest, ya, ga, val_size / (1 - test_size), seed + 1)
    else:
        train, val, test = _split_by_groups(rows, ya, ga, test_groups, train_groups, val_size, seed)
    train = np.r_[train, np.arange(len(ya) - train_only, len(ya))]
    missing = [c for c in classes if c in set(ya.tolist()) and not np.any(ya[train] == c)]
    if missing and test_groups is None:
        raise DataError(f"class(es) {missing} have no rows in the training split; add data or reduce test_size/val_size")
    if missing:
        warnings.warn(f"class(es) {missing} have no training rows under these groups; the model cannot learn them", stacklevel=2)
    return Fold(train, val, test)


def _split_by_groups(
    rows: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    test_groups: Collection[str],
    train_groups: Collection[str] | None,
    val_size: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test = the rows of ``test_groups``; validation carved by group from the ``train_groups`` rows."""
    if groups is None:
        raise DataError("test_groups needs groups (e.g. the record column)")
    gs = groups.astype(str)
    gm = gs[rows]
    test = rows[np.isin(gm, [str(g) for g in test_groups])]
    pool = rows[np.isin(gm, [str(g) for g in train_groups])] if train_groups is not None else np.setdiff1d(rows, test)
    pool = np.setdiff1d(pool, test)
    if not len(test) or not len(pool):
        raise DataError(f"the data have {len(pool)} training-side and {len(test)} test-side rows for these groups")
    left_out = len(rows) - len(test) - len(pool)
    if left_out:
        warnings.warn(f"{left_out} rows belong to groups in neither the training nor the test set and are left out", stacklevel=3)
    train, val = _split(pool, y, gs, val_size, seed + 1)
    # a class seen in too few training-side groups stays wholly in training
    for c in np.unique(y[pool]):
        if not np.any(y[train] == c):
            moved = np.isin(gs[val], np.unique(gs[val][y[val] == c]))
            train, val = np.sort(np.r_[train, val[moved]]), val[~moved]
    return train, val, test


def oversample_fold(
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    *,
    sampler: str | Sampler = "adasyn",
    sampler_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    classes: Sequence[int],
) -> Splits:
    """Oversample the ``train`` rows of ``X``/``y`` only and return the three parts as :class:`Splits`."""
    Xa = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    ya = np.asarray(y).astype(np.int64)
    classes = tuple(int(c) for c in classes)
    X_tr, y_tr = Xa[train], ya[train]
    name = sampler if isinstance(sampler, str) else type(sampler).__name__
    X_res, y_res = oversample(X_tr, y_tr, sampler, dict(sampler_params or {}), seed)
    return Splits(
        X_res,
        y_res,
        Xa[val],
        ya[val],
        Xa[test],
        ya[test],
        train,
        val,
        test,
        classes,
        name.lower(),
        _part_counts(ya, Fold(train, val, test), y_res, classes),
    )


def _part_counts(
    y: np.ndarray,
    fold: Fold,
    y_train_after: np.ndarray,
    classes: Sequence[int],
) -> dict[str, dict[int, int]]:
    """Class counts of all rows, of the training part before and after resampling, of validation and of test."""
    return {
        "all": class_counts(y, classes),
        "train_before": class_counts(y[fold.train], classes),
        "train_after": class_counts(y_train_after, classes),
        "val": class_counts(y[fold.val], classes),
        "test": class_counts(y[fold.test], classes),
    }


def _streamed_fold(X: Any, y: np.ndarray, fold: Fold, sampler: str, classes: Sequence[int]) -> Splits:
    """:class:`Splits` of lazy row views (``X[part]``) with the class counts of each part."""
    return Splits(
        X[fold.train],
        y[fold.train],
        X[fold.val],
        y[fold.val],
        X[fold.test],
        y[fold.test],
        *fold,
        tuple(int(c) for c in classes),
        sampler,
        _part_counts(y, fold, y[fold.train], classes),
    )


def cv_folds(
    y: pd.Series | np.ndarray,
    *,
    folds: int,
    groups: pd.Series | np.ndarray | None = None,
    val_size: float = 0.1,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    train_only: int = 0,
) -> list[Fold]:
    """The folds of a stratified (grouped) K-fold cross-validation.

    Each row is in exactly one test part; validation is carved by group from the rest, with
    ``val_size`` a fraction of all rows. Nothing is resampled here: :func:`oversample_fold`
    oversamples each fold's training part when it trains. The last ``train_only`` rows join
    every fold's training part and are never validation or test rows.
    """
    ya_all = np.asarray(y).astype(np.int64)
    extra = np.arange(len(ya_all) - train_only, len(ya_all))
    ya = ya_all[: len(ya_all) - train_only]
    ga = None if groups is None else np.asarray(groups).astype(str)[: len(ya)]
    classes = tuple(int(c) for c in (classes if classes is not None else np.unique(ya)))
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    _check_splittable(ya, ga, classes)
    n_units = len(ya) if ga is None else len(np.unique(ga))
    if n_units < folds:
        what = "rows" if ga is None else "groups"
        raise DataError(f"{folds} folds need at least {folds} {what}; the data have {n_units}")
    rows = np.arange(len(ya))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        if ga is None:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(rows, ya)
        else:
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(rows, ya, ga)
        parts = [(rest, test) for rest, test in splitter]
    out = []
    for k, (rest, test) in enumerate(parts, start=1):
        train, val = _split(rest, ya, ga, min(0.5, val_size * folds / (folds - 1)), seed + k)
        train = np.r_[train, extra]
        missing = [c for c in classes if np.any(ya == c) and not np.any(ya_all[train] == c)]
        if missing:
            raise DataError(f"fold {k}: class(es) {missing} have no rows in its training part; use fewer folds or add data")
        out.append(Fold(np.sort(train), np.sort(val), np.sort(test)))
    return out


def _check_splittable(y: np.ndarray, groups: np.ndarray | None, classes: Sequence[int]) -> None:
    """Each class needs a row (a group, when grouped) for each of train, validation and test."""
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"all {len(y)} rows have label {int(present[0])}; need at least two classes to split")
    for c in present:
        if groups is None:
            n, what = int(np.sum(y == c)), "rows"
        else:
            n, what = len(np.unique(groups[y == c])), "groups"
        if n < 3:
            raise DataError(f"class {int(c)} has only {n} {what}; a stratified train/validation/test split needs at least 3")


def _split(
    rows: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    size: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` in two, stratified by ``y`` and grouped by ``groups`` when given."""
    if groups is None:
        k = len(np.unique(y[rows]))
        n_b = max(k, round(size * len(rows)))  # every class needs a row on both sides
        if len(rows) - n_b < k:
            raise DataError(f"{len(rows)} rows are too few for a stratified split of {k} classes")
        a, b = train_test_split(rows, test_size=n_b, stratify=y[rows], random_state=seed)
        return np.sort(a), np.sort(b)
    g = groups[rows]
    smallest = int(np.unique(y[rows], return_counts=True)[1].min())  # scikit-learn: no more folds than a class has rows
    n_splits = max(2, min(round(1 / size), len(np.unique(g)), smallest))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        a, b = next(cv.split(rows, y[rows], g))
    return rows[a], rows[b]

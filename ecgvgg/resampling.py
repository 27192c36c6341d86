"""Split first, then oversample the training split only.

:func:`split_then_oversample` is the one entry point: it makes the stratified (and, with
``groups``, grouped) train/validation/test split and only then resamples the training rows.
Validation and test keep their original rows and class counts, so no synthetic beat built from a
test beat, and no beat of a test group, can ever reach training. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from ecgvgg.data import class_counts
from ecgvgg.errors import DataError

SAMPLERS: tuple[str, ...] = ("adasyn", "smote", "random", "none")


class Sampler(Protocol):
    """Anything with imbalanced-learn's ``fit_resample(X, y)``."""

    def fit_resample(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Splits:
    """Train (resampled), validation and test arrays, with the original row positions and class counts."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    train_index: np.ndarray
    val_index: np.ndarray
    test_index: np.ndarray
    classes: tuple[int, ...]
    sampler: str
    counts: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def counts_before(self) -> dict[int, int]:
        """Training-split class counts before oversampling."""
        return self.counts["train_before"]

    @property
    def counts_after(self) -> dict[int, int]:
        """Training-split class counts after oversampling."""
        return self.counts["train_after"]

    def map_x(self, fn: Callable[[np.ndarray], np.ndarray]) -> Splits:
        """Return a copy whose three X arrays went through ``fn`` (e.g. :func:`ecgvgg.shapes.to_1d`)."""
        return Splits(
            fn(self.X_train), self.y_train, fn(self.X_val), self.y_val, fn(self.X_test), self.y_test,
            self.train_index, self.val_index, self.test_index, self.classes, self.sampler, self.counts,
        )


def make_sampler(name: str, *, seed: int = 0, **params: Any) -> Sampler | None:
    """Build an imbalanced-learn sampler by name (``adasyn``, ``smote``, ``random``, ``none``)."""
    from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler

    name = name.lower()
    if name == "none":
        if params:
            raise ValueError(f"sampler 'none' takes no parameters, got {sorted(params)}")
        return None
    kinds = {"adasyn": ADASYN, "smote": SMOTE, "random": RandomOverSampler}
    if name not in kinds:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    try:
        sampler = kinds[name](random_state=seed, **params)
        sampler._validate_params()  # scikit-learn's own check of types and ranges, without data
    except TypeError as exc:
        raise ValueError(f"sampler {name!r}: {exc}") from exc
    except ValueError as exc:  # InvalidParameterError
        raise ValueError(f"sampler {name!r}: {str(exc).splitlines()[0]}") from None
    return sampler


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
    :data:`SAMPLERS` (with ``sampler_params`` passed to it) or any object with ``fit_resample``.
    ADASYN failures on a class fall back to SMOTE for that class, with a warning.
    With ``test_groups`` (e.g. the DS2 records) the test split is exactly those groups and
    validation is carved by group from ``train_groups`` (default: all other groups); rows in
    neither are left out, with a warning that counts them. The last ``train_only`` rows (e.g. a
    second database) join the training split and are never validation or test rows.
    """
    Xa = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    ya = np.asarray(y).astype(np.int64)
    ga = None if groups is None else np.asarray(groups)
    if Xa.ndim != 2:
        raise DataError(f"X must be 2-D (beats x samples), got shape {Xa.shape}")
    if len(Xa) != len(ya) or (ga is not None and len(ga) != len(ya)):
        raise DataError(f"X has {len(Xa)} rows, y {len(ya)}" + ("" if ga is None else f", groups {len(ga)}"))
    if not (0 < test_size < 1 and 0 < val_size < 1 and test_size + val_size < 1):
        raise ValueError(f"need 0 < test_size, val_size and test_size + val_size < 1; got {test_size}, {val_size}")
    classes = tuple(int(c) for c in (classes if classes is not None else np.unique(ya)))
    rows = np.arange(len(ya) - train_only)
    extra = np.arange(len(ya) - train_only, len(ya))
    if test_groups is None:
        _check_splittable(ya[rows], None if ga is None else ga[rows], classes)
        rest, test = _split(rows, ya, ga, test_size, seed)
        train, val = _split(rest, ya, ga, val_size / (1 - test_size), seed + 1)
    else:
        if ga is None:
            raise DataError("test_groups needs groups (e.g. the record column)")
        gs = ga.astype(str)
        gm = gs[rows]
        test = rows[np.isin(gm, [str(g) for g in test_groups])]
        pool = rows[np.isin(gm, [str(g) for g in train_groups])] if train_groups is not None else np.setdiff1d(rows, test)
        pool = np.setdiff1d(pool, test)
        if not len(test) or not len(pool):
            raise DataError(f"the data have {len(pool)} training-side and {len(test)} test-side rows for these groups")
        left_out = len(rows) - len(test) - len(pool)
        if left_out:
            warnings.warn(f"{left_out} rows belong to groups in neither the training nor the test set and are left out",
                          stacklevel=2)
        train, val = _split(pool, ya, gs, val_size, seed + 1)
        # a class seen in too few training-side groups stays wholly in training
        for c in np.unique(ya[pool]):
            if not np.any(ya[train] == c):
                moved = np.isin(gs[val], np.unique(gs[val][ya[val] == c]))
                train, val = np.sort(np.r_[train, val[moved]]), val[~moved]
    train = np.r_[train, extra]
    missing = [c for c in classes if c in set(ya.tolist()) and not np.any(ya[train] == c)]
    if missing and test_groups is None:
        raise DataError(f"class(es) {missing} have no rows in the training split; add data or reduce test_size/val_size")
    if missing:
        warnings.warn(f"class(es) {missing} have no training rows under these groups; the model cannot learn them",
                      stacklevel=2)
    return oversample_split(Xa, ya, train, val, test, sampler=sampler, sampler_params=sampler_params, seed=seed,
                            classes=classes)


def cap_per_class(rows: np.ndarray, y: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """The positions ``rows`` with every class above ``cap`` rows randomly undersampled to ``cap`` (sorted)."""
    if cap is None:
        return rows
    train = np.asarray(rows)
    keep = [rows if len(rows) <= cap else rng.choice(rows, cap, replace=False)
            for rows in (train[y[train] == c] for c in np.unique(y[train]))]
    return np.sort(np.concatenate(keep)) if keep else train


def oversample_split(
    X: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray, *,
    sampler: str | Sampler = "adasyn", sampler_params: Mapping[str, Any] | None = None, seed: int = 0,
    classes: Sequence[int],
) -> Splits:
    """Oversample the ``train`` rows of ``X``/``y`` only and return the three parts as :class:`Splits`."""
    Xa = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    ya = np.asarray(y).astype(np.int64)
    classes = tuple(int(c) for c in classes)
    X_tr, y_tr = Xa[train], ya[train]
    name = sampler if isinstance(sampler, str) else type(sampler).__name__
    X_res, y_res = _oversample(X_tr, y_tr, sampler, dict(sampler_params or {}), seed)
    counts = {
        "all": class_counts(ya, classes),
        "train_before": class_counts(y_tr, classes),
        "train_after": class_counts(y_res, classes),
        "val": class_counts(ya[val], classes),
        "test": class_counts(ya[test], classes),
    }
    return Splits(
        X_res, y_res, Xa[val], ya[val], Xa[test], ya[test], train, val, test, classes, name.lower(), counts
    )


def cv_folds(
    y: pd.Series | np.ndarray, *, folds: int, groups: pd.Series | np.ndarray | None = None, val_size: float = 0.1,
    seed: int = 0, classes: Sequence[int] | None = None, train_only: int = 0,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Row positions ``(train, val, test)`` of each fold of a stratified (grouped) K-fold cross-validation.

    Each row is in exactly one test part; validation is carved by group from the rest, with
    ``val_size`` a fraction of all rows. Nothing is resampled here: pass each fold to
    :func:`oversample_split` so that only that fold's training part is oversampled. The last
    ``train_only`` rows join every fold's training part and are never validation or test rows.
    """
    ya_all = np.asarray(y).astype(np.int64)
    extra = np.arange(len(ya_all) - train_only, len(ya_all))
    ya = ya_all[:len(ya_all) - train_only]
    ga = None if groups is None else np.asarray(groups).astype(str)[:len(ya)]
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
            raise DataError(f"fold {k}: class(es) {missing} have no rows in its training part; "
                            "use fewer folds or add data")
        out.append((np.sort(train), np.sort(val), np.sort(test)))
    return out


def cross_validation_splits(
    X: pd.DataFrame | np.ndarray, y: pd.Series | np.ndarray, *, folds: int, groups: pd.Series | np.ndarray | None = None,
    val_size: float = 0.1, sampler: str | Sampler = "adasyn", sampler_params: Mapping[str, Any] | None = None,
    seed: int = 0, classes: Sequence[int] | None = None,
) -> Iterator[Splits]:
    """Each fold of :func:`cv_folds` with its own training part oversampled, one at a time."""
    ya = np.asarray(y).astype(np.int64)
    classes = tuple(int(c) for c in (classes if classes is not None else np.unique(ya)))
    for train, val, test in cv_folds(ya, folds=folds, groups=groups, val_size=val_size, seed=seed, classes=classes):
        yield oversample_split(X, ya, train, val, test, sampler=sampler, sampler_params=sampler_params, seed=seed,
                               classes=classes)


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
            raise DataError(
                f"class {int(c)} has only {n} {what}; a stratified train/validation/test split needs at least 3"
            )


def _split(rows: np.ndarray, y: np.ndarray, groups: np.ndarray | None, size: float, seed: int):
    """Split ``rows`` in two, stratified by ``y`` and grouped by ``groups`` when given."""
    if groups is None:
        k = len(np.unique(y[rows]))
        n_b = max(k, round(size * len(rows)))  # every class needs a row on both sides
        if len(rows) - n_b < k:
            raise DataError(f"{len(rows)} rows are too few for a stratified split of {k} classes")
        a, b = train_test_split(rows, test_size=n_b, stratify=y[rows], random_state=seed)
        return np.sort(a), np.sort(b)
    g = groups[rows]
    n_splits = max(2, min(round(1 / size), len(np.unique(g))))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        a, b = next(cv.split(rows, y[rows], g))
    return rows[a], rows[b]


#: Samplers that interpolate between neighbours, and the name of their neighbour count.
_NEIGHBOUR_PARAM = {"adasyn": "n_neighbors", "smote": "k_neighbors"}


def _oversample(
    X: np.ndarray, y: np.ndarray, sampler: str | Sampler, params: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resample the training rows; ADASYN and SMOTE fall back per class where they cannot work."""
    if not isinstance(sampler, str):
        X_res, y_res = sampler.fit_resample(X, y)
        return np.asarray(X_res, dtype=np.float32), np.asarray(y_res, dtype=np.int64)
    name = sampler.lower()
    built = make_sampler(name, seed=seed, **params)
    if built is None:
        return X, y
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            X_res, y_res = built.fit_resample(X, y)
    except (RuntimeError, ValueError, UserWarning):
        if name not in _NEIGHBOUR_PARAM:
            raise
        return _per_class(X, y, name, params, seed)
    return np.asarray(X_res, dtype=np.float32), np.asarray(y_res, dtype=np.int64)


def _per_class(X: np.ndarray, y: np.ndarray, name: str, params: dict[str, Any], seed: int):
    """Oversample one class at a time to the count that ``sampling_strategy`` asks for (default: the
    majority count), using SMOTE with fewer neighbours (or duplication for a single row) for a
    class where ``name`` fails, with a warning that names that class."""
    from imblearn.over_sampling import SMOTE, RandomOverSampler
    from imblearn.utils import check_sampling_strategy

    key = _NEIGHBOUR_PARAM[name]
    values, counts = np.unique(y, return_counts=True)
    wanted = check_sampling_strategy(params.get("sampling_strategy", "auto"), y, "over-sampling")
    k = int(params.get(key, 5))
    extra = {k_: v for k_, v in params.items() if k_ not in {key, "sampling_strategy"}}
    new_X, new_y = [X], [y]
    for c, n in zip(values.tolist(), counts.tolist()):
        if wanted.get(c, 0) <= 0:
            continue
        strategy = {c: n + int(wanted[c])}
        if n <= k:
            reason = f"it has {n} rows, not more than {key}={k}"
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", UserWarning)
                    primary = make_sampler(name, seed=seed, sampling_strategy=strategy, **{key: k}, **extra)
                    Xr, _ = primary.fit_resample(X, y)
                new_X.append(np.asarray(Xr[len(X):], dtype=np.float32))
                new_y.append(np.full(len(Xr) - len(X), c, dtype=np.int64))
                continue
            except (RuntimeError, ValueError, UserWarning) as exc:
                reason = str(exc).strip().splitlines()[0]
        if n >= 2:
            k_smote = min(5, n - 1)
            warnings.warn(
                f"{name.upper()} cannot oversample class {c} ({reason}); using SMOTE with k_neighbors={k_smote} for it",
                stacklevel=3,
            )
            fallback = SMOTE(sampling_strategy=strategy, k_neighbors=k_smote, random_state=seed)
        else:
            warnings.warn(
                f"{name.upper()} cannot oversample class {c} ({reason}); it has 1 row, so it is duplicated instead",
                stacklevel=3,
            )
            fallback = RandomOverSampler(sampling_strategy=strategy, random_state=seed)
        Xr, _ = fallback.fit_resample(X, y)
        new_X.append(np.asarray(Xr[len(X):], dtype=np.float32))
        new_y.append(np.full(len(Xr) - len(X), c, dtype=np.int64))
    return np.concatenate(new_X).astype(np.float32, copy=False), np.concatenate(new_y)

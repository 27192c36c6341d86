"""Oversamplers (ADASYN, SMOTE, random) and the arrays of one split fold.

Splitting lives in :mod:`ecgvgg.core.folds`, the only caller of :func:`oversample`, so the training
part is always split off before it is resampled. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, get_args

import numpy as np

#: The oversamplers by name (``none``: no oversampling; ``balanced``: no copies, but training
#: batches drawn with chosen class proportions); the config's ``resampling.sampler``.
SamplerName = Literal["adasyn", "smote", "random", "balanced", "none"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)


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
    #: Effective number of records each class's training rows come from (see
    #: :func:`ecgvgg.core.class_weights.effective_records`); empty when the rows have no groups.
    records: dict[int, float] = field(default_factory=dict)
    #: A record code per training row (0..records-1; -1 for a synthetic row), for subject-invariant
    #: training (:mod:`ecgvgg.core.adversary`); None otherwise.
    train_groups: np.ndarray | None = None

    @property
    def counts_before(self) -> dict[int, int]:
        """Training-split class counts before oversampling."""
        return self.counts["train_before"]

    @property
    def counts_after(self) -> dict[int, int]:
        """Training-split class counts after oversampling."""
        return self.counts["train_after"]

    def map_x(self, fn: Callable[[np.ndarray], np.ndarray]) -> Splits:
        """Return a copy whose three X arrays went through ``fn`` (e.g. :func:`ecgvgg.core.shapes.to_1d`); streamed
        rows (:class:`ecgvgg.core.stream.Rows`) apply it to each chunk as it is read."""

        def apply(X: Any) -> Any:
            return fn(X) if isinstance(X, np.ndarray) else X.map(fn)

        return replace(self, X_train=apply(self.X_train), X_val=apply(self.X_val), X_test=apply(self.X_test))


def make_sampler(name: str, *, seed: int = 0, **params: Any) -> Sampler | None:
    """Build an imbalanced-learn sampler by name (``adasyn``, ``smote``, ``random``, ``none``)."""
    from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler

    name = name.lower()
    if name == "none":
        if params:
            raise ValueError(f"sampler 'none' takes no parameters, got {sorted(params)}")
        return None
    if name == "balanced":
        check_proportions(params)
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


def check_proportions(params: dict[str, Any]) -> None:
    """Refuse ``balanced`` sampler parameters other than ``proportions: {class: weight > 0}``."""
    extra = sorted(set(params) - {"proportions"})
    if extra:
        raise ValueError(f"sampler 'balanced' takes only 'proportions', got {extra}")
    wanted = params.get("proportions")
    if wanted is None:
        return
    if not isinstance(wanted, dict) or not wanted:
        raise ValueError("sampler 'balanced': proportions must map class labels to weights, e.g. {0: 1, 1: 1}")
    for c, w in wanted.items():
        if isinstance(c, bool) or not isinstance(c, int) or isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
            raise ValueError(f"sampler 'balanced': proportions[{c!r}] = {w!r}; expected a class label and a weight >= 0")
    if not sum(wanted.values()) > 0:
        raise ValueError("sampler 'balanced': the proportions sum to 0")


def balanced_proportions(y: np.ndarray, params: dict[str, Any]) -> dict[int, float]:
    """Share of each training batch per class present in ``y``: ``proportions`` (normalised), else equal shares.

    A class absent from ``y`` cannot be drawn: it is left out, with a warning when it was asked for.
    """
    present = [int(c) for c in np.unique(y)]
    wanted = {int(c): float(w) for c, w in (params.get("proportions") or {c: 1.0 for c in present}).items()}
    absent = sorted(c for c, w in wanted.items() if w > 0 and c not in present)
    if absent:
        warnings.warn(f"sampler 'balanced': classes {absent} have no training rows; their share goes to the others", stacklevel=2)
    kept = {c: wanted.get(c, 0.0) for c in present if wanted.get(c, 0.0) > 0}
    if not kept:
        raise ValueError("sampler 'balanced': none of the asked classes has training rows")
    total = sum(kept.values())
    return {c: w / total for c, w in kept.items()}


def cap_per_class(rows: np.ndarray, y: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """The positions ``rows`` with every class above ``cap`` rows randomly undersampled to ``cap`` (sorted)."""
    if cap is None:
        return rows
    train = np.asarray(rows)
    keep = [
        rows if len(rows) <= cap else rng.choice(rows, cap, replace=False)
        for rows in (train[y[train] == c] for c in np.unique(y[train]))
    ]
    return np.sort(np.concatenate(keep)) if keep else train


#: Samplers that interpolate between neighbours, and the name of their neighbour count.
_NEIGHBOUR_PARAM = {"adasyn": "n_neighbors", "smote": "k_neighbors"}


def oversample(
    X: np.ndarray, y: np.ndarray, sampler: str | Sampler, params: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The oversampler: resample training rows; ADASYN and SMOTE fall back per class where they cannot work.

    Only :mod:`ecgvgg.core.folds` calls it, on a training part that is already split off.
    """
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
                    assert primary is not None  # only "none" makes no sampler, and it has no neighbours
                    Xr, _ = primary.fit_resample(X, y)
                new_X.append(np.asarray(Xr[len(X) :], dtype=np.float32))
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
        new_X.append(np.asarray(Xr[len(X) :], dtype=np.float32))
        new_y.append(np.full(len(Xr) - len(X), c, dtype=np.int64))
    return np.concatenate(new_X).astype(np.float32, copy=False), np.concatenate(new_y)

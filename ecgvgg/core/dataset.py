"""A study's data, loaded and checked once, and its folds, planned once, before any run exists.

:func:`prepare` reads ``data.path`` (and any ``data.extra_train`` tables), checks every setting
that depends on the data (classes with no rows, ``input.size``, augmentation, the sampling
strategy, a transfer source's contract) and plans the folds, raising DataError or ConfigError
with a line that names the file or the YAML key. Needs neither TensorFlow nor MLflow.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ecgvgg.core.config import PipelineConfig, data_path
from ecgvgg.core.contract import InputContract
from ecgvgg.core.rows import samples_per_channel
from ecgvgg.core.data import load_xy
from ecgvgg.core.errors import ConfigError, DataError
from ecgvgg.core.folds import Fold, plan

log = logging.getLogger("ecgvgg")


@dataclass
class StudyData:
    """The loaded table: ``table`` as read (features only), its rows as float32 ``X``, labels, groups.

    The last ``train_only`` rows come from ``data.extra_train`` tables: they only ever train. With
    ``data.stream`` the beats stay in their Parquet files: ``X`` is an :class:`ecgvgg.core.stream.Shards`
    (``X[rows]`` is a lazy view), ``table`` has the columns but no rows, and ``groups`` holds small
    integer codes into ``group_names`` (see :meth:`named_groups`).
    """

    table: pd.DataFrame
    X: Any
    y: np.ndarray
    groups: np.ndarray | None
    train_only: int = 0
    group_names: np.ndarray | None = None

    @classmethod
    def from_arrays(
        cls, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, columns: list[str] | None = None, train_only: int = 0
    ) -> StudyData:
        """Data given as arrays (rows of beat samples, then any rhythm columns): for library use."""
        X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
        table = pd.DataFrame(X, columns=columns or [f"x{i}" for i in range(X.shape[1])])
        return cls(table, X, np.asarray(y).astype(np.int64), None if groups is None else np.asarray(groups), train_only)

    @property
    def features(self) -> list[Any]:
        """The feature columns (beat samples, then any rhythm columns)."""
        return list(self.table.columns)

    @property
    def streamed(self) -> bool:
        """Whether the beats are streamed from Parquet rather than held in memory."""
        return not isinstance(self.X, np.ndarray)

    def rows(self, positions: np.ndarray, columns: list[str] | None = None) -> np.ndarray:
        """Rows ``positions`` as float32 (read from Parquet when streamed), all features or the named ``columns``."""
        if self.streamed:
            return self.X.take(positions, columns)
        X = self.X[np.asarray(positions, dtype=np.int64)]
        names = [str(c) for c in self.features]
        return X if columns is None else X[:, [names.index(c) for c in columns]]

    def named_groups(self, positions: np.ndarray | None = None) -> np.ndarray | None:
        """The group names of rows ``positions`` (of all rows when None); None without groups."""
        if self.groups is None:
            return None
        groups = self.groups if positions is None else self.groups[positions]
        return groups if self.group_names is None else self.group_names[groups]

    def distinct_groups(self, *parts: np.ndarray) -> np.ndarray | None:
        """The distinct group names of the rows at the positions ``parts``, sorted; None without groups."""
        if self.groups is None:
            return None
        if self.group_names is None:
            return np.unique(np.concatenate([np.unique(self.groups[p]) for p in parts]))
        seen, step = np.zeros(len(self.group_names), dtype=bool), 1 << 20
        for p in parts:  # codes a million rows at a time: nothing the size of the table
            for lo in range(0, len(p), step):
                seen[self.groups[p[lo : lo + step]]] = True
        return self.group_names[seen]

    @property
    def scored(self) -> int:
        """Rows that may be validation or test rows (all but the ``train_only`` ones)."""
        return len(self.y) - self.train_only


def grouping(cfg: PipelineConfig, data: StudyData) -> np.ndarray | None:
    """The groups the split honours (``split.grouped`` or de Chazal's protocol), else None."""
    return data.groups if cfg.grouped_split else None


def split_kind(cfg: PipelineConfig) -> str:
    """Which protocol produced the test scores, in words (logged as the ``split_kind`` tag)."""
    if cfg.split.protocol == "de_chazal":
        return "inter-patient (de Chazal DS1/DS2)"
    if cfg.data.group_column and cfg.split.grouped:
        return f"grouped by {cfg.data.group_column}"
    return "ungrouped beats"


def beat_length(cfg: PipelineConfig, width: int) -> int:
    """Samples per beat and channel in rows of ``width`` values: less the rhythm columns, over the channels."""
    return samples_per_channel(width, len(cfg.data.rhythm_columns), len(cfg.data.channels))


def load(cfg: PipelineConfig) -> StudyData:
    """Load and validate the configured table(s); ``data.extra_train`` rows come last."""
    d = cfg.data
    if d.stream:
        from ecgvgg.core.stream import open_shards

        shards, y, groups = open_shards(
            d.resolved_path(),
            label_column=d.label_column,
            group_column=d.group_column,
            classes=range(len(d.class_names)),
            rhythm_columns=d.rhythm_columns,
            ignore_columns=d.ignore_columns,
            channels=d.channels,
        )
        return StudyData(
            pd.DataFrame(columns=list(shards.columns)),
            shards,
            y,
            None if groups is None else groups.codes,
            group_names=None if groups is None else groups.names,
        )
    header = None if d.header == "auto" else d.header
    y_path = d.resolved_path("y_path") if d.y_path else None
    options: dict[str, Any] = dict(
        label_column=d.label_column,
        group_column=d.group_column,
        header=header,
        classes=range(len(d.class_names)),
        format=d.format,
        rhythm_columns=d.rhythm_columns,
        ignore_columns=d.ignore_columns,
        channels=d.channels,
    )
    X, y, groups = load_xy(d.resolved_path(), y_path, **options)
    extras = [_extra_table(path, options) for path in d.extra_train]
    for path, (Xe, _, _) in zip(d.extra_train, extras):
        if list(map(str, Xe.columns)) != list(map(str, X.columns)):
            raise DataError(
                f"{path}: data.extra_train table has columns {list(Xe.columns)[:3]}... ({Xe.shape[1]}), "
                f"{d.path} has {list(X.columns)[:3]}... ({X.shape[1]}); make both the same way"
            )
    if extras:
        X = pd.concat([X, *(e[0].set_axis(X.columns, axis=1) for e in extras)], ignore_index=True)
        y = pd.concat([y, *(e[1] for e in extras)], ignore_index=True)
        if groups is not None:
            groups = pd.concat([groups.astype(str), *(e[2].astype(str) for e in extras if e[2] is not None)], ignore_index=True)
    return StudyData(
        X,
        X.to_numpy(dtype=np.float32),
        y.to_numpy().astype(np.int64),
        None if groups is None else groups.to_numpy(),
        sum(len(e[1]) for e in extras),
    )


def _extra_table(path: str, options: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.Series, pd.Series | None]:
    """One ``data.extra_train`` table, read like ``data.path``; its errors name the key."""
    try:
        return load_xy(data_path(path), **options)
    except DataError as exc:
        raise DataError(f"data.extra_train: {exc}") from None


def prepare(
    cfg: PipelineConfig, data: StudyData | None = None, source: InputContract | None = None
) -> tuple[StudyData, list[Fold]]:
    """Load the data (unless given), check every data-dependent setting and plan the folds.

    ``source`` is the contract of the ``model.weights: run:ID`` network, checked against this
    config and data. Raises DataError or ConfigError naming the file or the YAML key.
    """
    data = data if data is not None else load(cfg)
    _check_settings(cfg, data, source)
    # streamed groups are planned by their codes (in the names' order, so the same split), de Chazal's by name
    groups = data.named_groups() if cfg.split.protocol == "de_chazal" else data.groups
    return data, plan(cfg, data.y, groups, data.train_only)


def _check_settings(cfg: PipelineConfig, data: StudyData, source: InputContract | None) -> None:
    """Settings that depend on the data: classes with rows, the source network, input size, augmentation,
    sampling strategy."""
    from ecgvgg.core.shapes import fold_side

    names = list(cfg.data.class_names)
    counts = np.bincount(data.y, minlength=len(names))
    empty = [f"{n} ({c})" for c, n in enumerate(names) if counts[c] == 0]
    if empty:
        raise DataError(
            f"{cfg.data.resolved_path()}: data.class_names has class(es) {', '.join(empty)} with no rows; "
            "drop them from data.class_names and relabel, or add rows"
        )
    if source is not None:
        check_source(cfg, source, data.X.shape[1])
    length, i = beat_length(cfg, data.X.shape[1]), cfg.input
    if i.kind == "2d" and i.method == "fold" and i.size is not None and i.size < fold_side(length):
        raise ConfigError(
            f"input.size: {i.size} is too small to fold {length} samples (need at least {fold_side(length)}, or leave it unset)"
        )
    if i.kind == "2d" and i.method == "gaf" and i.size is not None and not 2 <= i.size <= length:
        raise ConfigError(
            f"input.size: {i.size} does not fit a Gramian angular field of {length}-sample beats (choose 2 to {length})"
        )
    if cfg.input.kind != "1d" and cfg.time_axis_augmentation():
        warnings.warn(
            f"{', '.join(cfg.time_axis_augmentation())} act on 1D beats only: not applied to "
            f"input.kind {cfg.input.kind} (set them to 0 to silence this)",
            stacklevel=3,
        )
    if cfg.training.augment_shift >= length // 2:
        raise ConfigError(
            f"training.augment_shift: {cfg.training.augment_shift} samples is half or more of a "
            f"{length}-sample beat (use a few samples)"
        )
    strategy = cfg.resampling.params.get("sampling_strategy")
    if strategy is not None and cfg.resampling.sampler != "none":
        from imblearn.utils import check_sampling_strategy

        try:
            check_sampling_strategy(strategy, data.y, "over-sampling")
        except ValueError as exc:
            raise ConfigError(
                f"resampling.params.sampling_strategy: {strategy!r} does not fit the data ({str(exc).splitlines()[0]})"
            ) from None


def check_source(cfg: PipelineConfig, source: InputContract, width: int) -> None:
    """Refuse a ``model.weights: run:ID`` network whose input contract does not fit this config and data."""
    from ecgvgg.core.config import RUN_PREFIX
    from ecgvgg.core.contract import contract_for

    run_id = (cfg.model.weights or "")[len(RUN_PREFIX) :]
    mine = contract_for(cfg, [""] * width)
    differs = source.mismatches(mine, new_head=cfg.model.new_head, source=True)
    if differs:
        raise ConfigError(f"model.weights: run {run_id}'s model does not fit this config: " + "; ".join(differs))
    log.info("starting from run %s's network (%d classes there, %d here)", run_id, len(source.classes), len(cfg.data.class_names))

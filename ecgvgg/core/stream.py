"""Beats read from Parquet files in record batches, never whole: for tables larger than memory.

:func:`open_shards` reads only the label and group columns (from which the split is planned)
and checks every beat batch by batch; :class:`Shards` stands for the table's rows, and
``shards[positions]`` is a :class:`Rows` view that yields those rows in chunks
(:meth:`Rows.chunks`), so memory holds one record batch at a time. NumPy and pyarrow only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgvgg.core.errors import DataError

#: Rows per record batch read from a Parquet file.
BATCH_ROWS = 8192


@dataclass(frozen=True)
class Shards:
    """The feature columns of a table kept in Parquet files: file ``i`` holds rows ``starts[i]`` to ``starts[i + 1]``."""

    files: tuple[Path, ...]
    starts: np.ndarray
    columns: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int, int]:
        """Rows and feature columns, as an array's shape."""
        return len(self), len(self.columns)

    def __getitem__(self, positions: np.ndarray) -> Rows:
        return Rows(self, sorted_positions(positions))

    def take(self, positions: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
        """Rows ``positions`` (any order) read into memory as float32, all feature columns or ``columns``."""
        positions = np.asarray(positions, dtype=np.int64)
        order = np.argsort(positions, kind="stable")
        view = Rows(self, positions[order], columns=tuple(columns) if columns is not None else None)
        chunks = [x for x, _ in view.chunks()]
        width = len(columns) if columns is not None else len(self.columns)
        out = np.empty((len(positions), width), dtype=np.float32)
        out[order] = np.concatenate(chunks) if chunks else np.empty((0, width), np.float32)
        return out


@dataclass(frozen=True)
class Rows:
    """Some rows of :class:`Shards` (sorted positions), read lazily; ``transform`` reshapes each chunk."""

    shards: Shards
    positions: np.ndarray
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    columns: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, ...]:
        """Rows, then the shape of one row after ``transform``."""
        return (len(self), *self.row_shape)

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row after ``transform``."""
        width = len(self.columns or self.shards.columns)
        one = np.zeros((1, width), dtype=np.float32)
        return tuple((self.transform(one) if self.transform else one).shape[1:])

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> Rows:
        """These rows with ``fn`` applied to every chunk (after any earlier transform)."""
        before = self.transform
        return replace(self, transform=fn if before is None else (lambda a: fn(before(a))))

    def subset(self, keep: np.ndarray) -> Rows:
        """The rows where the boolean mask ``keep`` (one value per row here) is true."""
        return replace(self, positions=self.positions[np.asarray(keep, dtype=bool)])

    def for_worker(self, rank: int, count: int) -> Rows:
        """The rows in files ``rank``, ``rank + count``, ...: one worker's share when ``count`` read together."""
        file_of = np.searchsorted(self.shards.starts, self.positions, side="right") - 1
        return replace(self, positions=self.positions[file_of % count == rank])

    def files_read(self) -> list[Path]:
        """The files that hold at least one of these rows."""
        edges = self._edges()
        return [f for f, a, b in zip(self.shards.files, edges[:-1], edges[1:]) if b > a]

    def _edges(self) -> np.ndarray:
        """Where each file's rows begin in ``positions`` (and where the last file's end)."""
        return np.searchsorted(self.positions, self.shards.starts)

    def chunks(
        self,
        size: int = BATCH_ROWS,
        rng: np.random.Generator | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, positions)`` chunks of at most ``size`` rows, in row order; with ``rng``, files in random order
        and rows shuffled within each chunk. ``x`` is float32, after ``transform``."""
        columns = list(self.columns or self.shards.columns)
        order = rng.permutation(len(self.shards.files)) if rng is not None else range(len(self.shards.files))
        edges = self._edges()
        for i in order:
            if edges[i + 1] == edges[i]:
                continue
            local = self.positions[edges[i] : edges[i + 1]] - self.shards.starts[i]  # one file's positions at a time
            for x, rows in _read_rows(self.shards.files[i], local, columns, size):
                if rng is not None:
                    shuffled = rng.permutation(len(rows))
                    x, rows = x[shuffled], rows[shuffled]
                yield (self.transform(x) if self.transform else x), rows + self.shards.starts[i]


def sorted_positions(positions: np.ndarray) -> np.ndarray:
    """``positions`` as integers in ascending order: the array itself when it already is, else a sorted copy."""
    p = np.asarray(positions)
    p = p if p.dtype.kind in "iu" else p.astype(np.int64)
    return p if len(p) < 2 or not np.any(p[1:] < p[:-1]) else np.sort(p)


def label_dtype(classes: Sequence[int]) -> np.dtype:
    """``int8`` when every class label fits in it (the AAMI classes do), else ``int64``: labels of streamed rows."""
    small = all(-128 <= int(c) <= 127 for c in classes)
    return np.dtype(np.int8 if small else np.int64)


def _read_rows(
    path: Path,
    local: np.ndarray,
    columns: list[str],
    size: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rows ``local`` (sorted, within the file) of ``columns``: record batch by batch, skipping row groups without any."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    bounds = np.r_[0, np.cumsum(sizes)]
    wanted = np.flatnonzero(np.searchsorted(local, bounds[1:]) > np.searchsorted(local, bounds[:-1]))
    for g in wanted:
        offset = int(bounds[g])
        for batch in pf.iter_batches(batch_size=size, row_groups=[int(g)], columns=columns):
            lo, hi = np.searchsorted(local, [offset, offset + batch.num_rows])
            if hi > lo:
                picked = batch.take(local[lo:hi] - offset)
                yield _matrix(picked), local[lo:hi]
            offset += batch.num_rows


def _matrix(batch: object) -> np.ndarray:
    """A record batch's columns as one float32 ``(rows, columns)`` array."""
    return np.column_stack([np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.float32) for c in batch.columns])  # type: ignore[attr-defined]


def open_shards(
    path: Path,
    *,
    label_column: str,
    group_column: str | None,
    classes: Sequence[int],
    rhythm_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    channels: Sequence[str] = (),
) -> tuple[Shards, np.ndarray, GroupCodes | None]:
    """Open Parquet shards (a file, a folder or a glob) for streaming: ``(shards, y, groups)``.

    Reads the label and group columns whole, and every feature value once, batch by batch, to
    check it is a finite number; raises DataError naming the file, column and row. What stays in
    memory grows by a few bytes a row: labels as :func:`label_dtype`, groups as :class:`GroupCodes`.
    """
    import pyarrow.parquet as pq

    from ecgvgg.core.data import is_shards, Source, validate_labels, select_columns, shard_files

    files = shard_files(path) if is_shards(path) else [path]
    if not files or not files[0].is_file():
        raise DataError(f"{path}: no Parquet file here (data.stream reads a .parquet file, a folder of them or a glob)")
    schemas = _schemas(files)
    present = schemas[0].names
    for need, key in ((label_column, "data.label_column"), (group_column, "data.group_column")):
        if need is not None and need not in present:
            raise DataError(f"{files[0]}: no column '{need}' ({key})")
    rest = pd.DataFrame(columns=[n for n in present if n not in (label_column, group_column)])
    columns = tuple(map(str, select_columns(rest, files[0], rhythm_columns, ignore_columns, channels).columns))
    _check_types(files, schemas, columns)
    labels, counts = [], []
    names: dict[str, int] = {}
    codes: list[np.ndarray] = []
    for f in files:
        table = pq.read_table(f, columns=[c for c in (label_column, group_column) if c])
        src = Source(f, -1)
        labels.append(validate_labels(table.column(label_column).to_pandas(), src, classes, min_classes=1).to_numpy())
        if group_column:
            g = table.column(group_column).to_pandas()
            if g.isna().any():
                raise DataError(f"{f}: group column '{group_column}' is empty at row {int(np.flatnonzero(g.isna())[0])}")
            codes.append(_group_codes(g.astype(str).to_numpy(), names))
        labels[-1] = labels[-1].astype(label_dtype(classes))
        counts.append(table.num_rows)
    shards = Shards(tuple(files), np.r_[0, np.cumsum(counts)].astype(np.int64), columns)
    _check_values(shards)
    y = np.concatenate(labels)
    if len(np.unique(y)) < 2:
        raise DataError(f"{path}: all {len(y)} rows have label {int(y[0])}; a classifier needs at least two classes")
    return shards, y, _sorted_codes(np.concatenate(codes), names) if group_column else None


def _group_codes(groups: np.ndarray, names: dict[str, int]) -> np.ndarray:
    """One file's group names as ``int32`` codes, numbered in the order first seen across files (``names`` grows)."""
    found, inverse = np.unique(groups, return_inverse=True)
    lookup = np.array([names.setdefault(str(g), len(names)) for g in found], dtype=np.int32)
    return lookup[inverse.reshape(-1)]


def _sorted_codes(codes: np.ndarray, names: dict[str, int]) -> GroupCodes:
    """Codes renumbered so that their order is the names' order (a split by code is the split by name)."""
    by_code = np.array(list(names), dtype=str)
    order = np.argsort(by_code, kind="stable")
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return GroupCodes(rank[codes], by_code[order])


@dataclass(frozen=True)
class GroupCodes:
    """Each row's group as a small integer ``codes[i]`` into ``names`` (sorted): 4 bytes a row, whatever the names."""

    codes: np.ndarray
    names: np.ndarray


def _schemas(files: Sequence[Path]) -> list[Any]:
    """Each file's schema, read once; a file that is not Parquet, or whose columns differ, is refused by name."""
    import pyarrow.parquet as pq

    from ecgvgg.core.data import first_line

    schemas = []
    for f in files:
        try:
            schemas.append(pq.read_schema(f))
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise DataError(f"{f}: cannot read as Parquet ({first_line(exc)})") from None
        if schemas[-1].names != schemas[0].names:
            raise DataError(f"{f}: its columns differ from those of {files[0].name}; shards need the same columns")
    return schemas


def _check_types(files: Sequence[Path], schemas: Sequence[Any], columns: Sequence[str]) -> None:
    """Feature columns hold numbers (integers or floats) in every file, by its schema."""
    import pyarrow as pa

    for f, schema in zip(files, schemas):
        for name in columns:
            kind = schema.field(name).type
            if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
                raise DataError(f"{f}: column '{name}' is {kind}, not numeric; beats must be numbers")


def _check_values(shards: Shards) -> None:
    """Every feature value is a finite float32, checked one record batch at a time."""
    everything = shards[np.arange(len(shards))]
    with np.errstate(over="ignore", invalid="ignore"):
        for x, rows in everything.chunks():
            bad = ~np.isfinite(x)
            if bad.any():
                i, j = (int(v) for v in np.argwhere(bad)[0])
                k = int(np.searchsorted(shards.starts, rows[i], side="right")) - 1
                raise DataError(
                    f"{shards.files[k]}: column '{shards.columns[j]}' has {x[i, j]} at row "
                    f"{int(rows[i] - shards.starts[k])}; beats must be finite numbers"
                )

"""Load heartbeat tables as ``X`` / ``y`` / ``groups`` and validate them before anything else runs.

Supported inputs:

* a headerless Kaggle-style CSV (one beat per row, label in the last column),
* a CSV or Parquet file with a header, a label column and an optional group column,
* separate X and y files (CSV or Parquet).

Every problem raises :class:`ecgvgg.core.errors.DataError` naming the file, the column and the
first bad row. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import glob
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecgvgg.core.errors import DataError

DEFAULT_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4)
_CSV_SUFFIXES = {".csv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Source:
    """Where a table came from, so that messages can point at a line or row."""

    path: Path
    header_lines: int  # 0 for headerless CSV, 1 with a header, -1 for Parquet

    def where(self, i: int) -> str:
        """Where row ``i`` is, in the words of an error message (file and line or row)."""
        if self.header_lines < 0:
            return f"row {i}"
        return f"line {i + 1 + self.header_lines}"


def load_xy(
    path: str | Path,
    y_path: str | Path | None = None,
    *,
    label_column: str = "label",
    group_column: str | None = None,
    header: bool | None = None,
    classes: Sequence[int] = DEFAULT_CLASSES,
    format: str = "auto",
    rhythm_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    channels: Sequence[str] = (),
    label_option: str = "data.label_column",
) -> tuple[pd.DataFrame, pd.Series, pd.Series | None]:
    """Load and validate beats as ``(X, y, groups)``; ``groups`` is None without a group column.

    ``X`` holds the beat samples, then the ``rhythm_columns`` last, in that order; columns that
    match an ``ignore_columns`` pattern are dropped (a pattern that matches nothing is an error).
    With ``channels`` (column prefixes) the beat samples are those channels' columns, channel after
    channel (see :func:`channel_columns`).

    ``header=None`` detects whether a CSV has a header row; ``header=False`` declares a
    headerless Kaggle-style CSV whose last column is the label. With ``y_path`` the labels come
    from a second file (one column, or a column named ``label_column``). ``format`` is ``auto``
    (by file suffix), ``csv`` or ``parquet``.
    """
    text_columns = {group_column} if group_column else set()
    table, src = _read_table(path, header, text_columns, format)
    if y_path is None:
        X, y, groups = _split_columns(
            table, src, label_column, group_column, label_last=src.header_lines == 0, label_option=label_option
        )
        y_src = src
    else:
        y_table, y_src = _read_table(y_path, header, set(), format)
        groups = _pop_group(table, src, group_column)
        X = table
        y = _pick_label(y_table, y_src, label_column)
        if len(X) != len(y):
            raise DataError(
                f"{src.path}: {len(X)} rows of X but {y_src.path} has {len(y)} labels; "
                "X and y files must have the same number of rows"
            )
    X = _validate_features(select_columns(X, src.path, rhythm_columns, ignore_columns, channels), src)
    y = validate_labels(y, y_src, classes)
    return X, y, groups


def channel_columns(names: Sequence[str], channels: Sequence[str], path: str | Path) -> list[str]:
    """The columns of each channel (``PREFIX0``, ``PREFIX1``, ...), channel after channel; every channel
    must be there, numbered from 0 without a gap, and as long as the first."""
    import re

    out: list[str] = []
    length = None
    for prefix in channels:
        pattern = re.compile(re.escape(prefix) + r"(\d+)")
        index = sorted(int(m.group(1)) for n in names if (m := pattern.fullmatch(n)))
        if not index:
            what = "reference beat" if prefix.startswith("ref") else "beat"
            raise DataError(
                f"{path}: no columns {prefix}0, {prefix}1, ... for the {what} channel '{prefix}' "
                "(data.channels); ecgvgg prepare --leads ... --reference ... writes them"
            )
        if index != list(range(len(index))) or (length is not None and len(index) != length):
            raise DataError(
                f"{path}: channel '{prefix}' has columns {prefix}{index[0]}..{prefix}{index[-1]} "
                f"({len(index)}), expected {prefix}0..{prefix}{(length or len(index)) - 1} "
                "like the first channel (data.channels)"
            )
        length = len(index)
        out += [f"{prefix}{i}" for i in index]
    return out


def select_columns(
    X: pd.DataFrame,
    path: str | Path,
    rhythm_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    channels: Sequence[str] = (),
) -> pd.DataFrame:
    """Beat-sample columns (those of ``channels`` when given) then ``rhythm_columns``, without the
    columns matching ``ignore_columns``."""
    from fnmatch import fnmatchcase

    names = [str(c) for c in X.columns]
    missing = [c for c in rhythm_columns if c not in names]
    if missing:
        raise DataError(
            f"{path}: no rhythm column(s) {', '.join(missing)} (data.rhythm_columns); "
            "ecgvgg prepare writes rr_* columns, or drop data.rhythm_columns"
        )
    unmatched = [p for p in ignore_columns if not any(fnmatchcase(n, p) for n in names)]
    if unmatched:
        raise DataError(
            f"{path}: data.ignore_columns {', '.join(unmatched)} match(es) no column (columns: {_preview(X.columns)})"
        )
    rhythm = set(rhythm_columns)
    if channels:
        wanted = channel_columns(names, channels, path) + list(rhythm_columns)
        return X[[X.columns[names.index(c)] for c in wanted]]
    beats = [c for c, n in zip(X.columns, names) if n not in rhythm and not any(fnmatchcase(n, p) for p in ignore_columns)]
    if not beats:
        raise DataError(f"{path}: no beat-sample columns left besides the rhythm and ignored columns")
    if not rhythm and not ignore_columns:
        return X
    return X[beats + [X.columns[names.index(c)] for c in rhythm_columns]]


def _read_table(path: str | Path, header: bool | None, text_columns: set[str], fmt: str = "auto") -> tuple[pd.DataFrame, Source]:
    """Read a CSV or Parquet file into a DataFrame, failing with a DataError that names it."""
    try:
        return _read_table_unguarded(path, header, text_columns, fmt)
    except OSError as exc:  # permissions, a vanished file, a device error
        raise DataError(f"{path}: cannot read ({exc.strerror or first_line(exc)})") from None


def _read_table_unguarded(
    path: str | Path, header: bool | None, text_columns: set[str], fmt: str = "auto"
) -> tuple[pd.DataFrame, Source]:
    p = Path(path)
    if is_shards(p):
        table = _read_shards(p)
        if table.shape[0] == 0:
            raise DataError(f"{p}: its shards have no rows")
        return table, Source(p, -1)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")
    suffix = p.suffix.lower()
    if fmt not in ("auto", "csv", "parquet"):
        raise ValueError(f"format must be auto, csv or parquet, got {fmt!r}")
    if fmt == "parquet" or (fmt == "auto" and suffix in _PARQUET_SUFFIXES):
        try:
            table = pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise DataError(f"{p}: cannot read as Parquet ({first_line(exc)})") from None
        src = Source(p, -1)
    elif fmt == "csv" or suffix in _CSV_SUFFIXES or suffix == "":
        try:
            table, src = _read_csv(p, header, text_columns)
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{p}: not UTF-8 text (byte {exc.start}); expected a CSV file, not a compressed or binary one"
            ) from None
    else:
        raise DataError(f"{p}: unknown file type '{suffix}' (expected .csv or .parquet)")
    if table.shape[0] == 0:
        raise DataError(f"{p}: table has no rows")
    return table, src


def is_shards(path: Path) -> bool:
    """Whether a data path names Parquet shards: a folder, or a pattern (``*``, ``?``) that is not a file."""
    return path.is_dir() or (not path.exists() and any(ch in path.name for ch in "*?"))


def shard_files(path: Path) -> list[Path]:
    """The Parquet files of a folder (``*.parquet``, ``*.pq``) or a glob pattern, in name order."""
    if path.is_dir():
        return sorted(f for f in path.iterdir() if f.suffix.lower() in _PARQUET_SUFFIXES and f.is_file())
    return sorted(Path(f) for f in glob.glob(str(path)) if Path(f).is_file())


def _read_shards(path: Path) -> pd.DataFrame:
    """Parquet shards with the same columns as one table, shard after shard in name order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = shard_files(path)
    if not files:
        raise DataError(
            f"{path}: is a directory with no Parquet files, or a pattern that matches none "
            "(expected a CSV or Parquet file, or a folder of Parquet shards)"
        )
    tables, first = [], None
    for f in files:
        try:
            table = pq.read_table(f)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise DataError(f"{f}: cannot read as Parquet ({first_line(exc)})") from None
        if first is None:
            first = table.schema
        elif table.schema.names != first.names:
            raise DataError(
                f"{f}: its columns ({_preview(pd.Index(table.schema.names))}) differ from those of "
                f"{files[0].name} ({_preview(pd.Index(first.names))}); shards need the same columns"
            )
        try:
            tables.append(table.cast(first) if table.schema != first else table)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"{f}: its column types differ from those of {files[0].name} ({first_line(exc)})") from None
    return pa.concat_tables(tables).to_pandas()


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of a library's message, at most ``limit`` characters."""
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(p: Path, header: bool | None, text_columns: set[str]) -> tuple[pd.DataFrame, Source]:
    """Read a CSV with pyarrow straight into float32 columns (``text_columns`` kept as text)."""
    with p.open(newline="", encoding="utf-8") as fh:
        first = next(csv.reader(fh), [])
    if not first:
        raise DataError(f"{p}: file is empty")
    # column numbers 0, 1, 2, ... as pandas writes them are a header too
    numeric_first = all(_is_number(f) for f in first) and not (len(first) > 2 and first == [str(i) for i in range(len(first))])
    if header is False and not numeric_first:
        bad = next((f for f in first if not _is_number(f)), ",".join(first[:3]) + ",...")
        raise DataError(
            f"{p}: line 1 looks like a header row ({bad!r}), but the file is declared headerless; "
            "remove the row or set data.header: true"
        )
    has_header = (not numeric_first) if header is None else header
    src = Source(p, 1 if has_header else 0)
    names = first if has_header else list(range(len(first)))
    dtypes = {n: np.float32 for n in names if n not in text_columns}
    try:
        with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow to inf is reported below, with the value
            table = pd.read_csv(p, header=0 if has_header else None, engine="pyarrow", dtype=dtypes if has_header else np.float32)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{p}: file is empty") from exc
    except Exception:  # noqa: BLE001 - diagnose the exact line below
        _diagnose_csv(p, src, len(first), set(dtypes) if has_header else None, names)
        raise
    if not has_header:
        table.columns = range(table.shape[1])
    return table, src


def _diagnose_csv(p: Path, src: Source, width: int, numeric: set | None, names: list) -> None:
    """Find the first ragged line or non-numeric cell of a CSV that pyarrow refused."""
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        if src.header_lines:
            next(reader)
        for i, row in enumerate(reader):
            if len(row) != width:
                raise DataError(f"{p}: {src.where(i)} has {len(row)} columns, expected {width} (ragged row)")
            for j, cell in enumerate(row):
                if (numeric is None or names[j] in numeric) and cell.strip() and not _is_number(cell):
                    raise DataError(f"{p}: column {_colname(names[j])} is not numeric at {src.where(i)}: {cell!r}")
                if (numeric is None or names[j] in numeric) and cell.strip() and _FLOAT32_MAX < abs(float(cell)) < np.inf:
                    raise DataError(
                        f"{p}: column {_colname(names[j])} has {cell.strip()} at {src.where(i)}, "
                        "beyond the float32 range (about 3.4e38); rescale the beats"
                    )
    raise DataError(f"{p}: cannot parse as CSV")


def _raw_cell(src: Source, i: int, j: int) -> str | None:
    """The text of cell ``(i, j)`` of a CSV source as written in the file (None for Parquet)."""
    if src.header_lines < 0:
        return None
    with src.path.open(newline="", encoding="utf-8") as fh:
        for k, row in enumerate(csv.reader(fh)):
            if k == i + src.header_lines:
                return row[j] if j < len(row) else None
    return None


def _colname(name: object) -> str:
    return f"{name}" if isinstance(name, (int, np.integer)) else f"'{name}'"


def _pop_group(table: pd.DataFrame, src: Source, group_column: str | None) -> pd.Series | None:
    if group_column is None:
        return None
    if group_column not in table.columns:
        raise DataError(
            f"{src.path}: no group column '{group_column}' (columns: {_preview(table.columns)}); "
            "set data.group_column to the column naming each beat's recording, or to null to split "
            "by beat (scores are then optimistic)"
        )
    groups = table.pop(group_column)
    if groups.isna().any():
        i = int(np.flatnonzero(groups.isna().to_numpy())[0])
        raise DataError(f"{src.path}: group column '{group_column}' is empty at {src.where(i)}")
    return groups.astype(str)


def _pick_label(table: pd.DataFrame, src: Source, label_column: str) -> pd.Series:
    if label_column in table.columns:
        return table[label_column]
    if table.shape[1] == 1:
        return table.iloc[:, 0]
    raise DataError(f"{src.path}: no label column '{label_column}' (columns: {_preview(table.columns)})")


def _split_columns(
    table: pd.DataFrame,
    src: Source,
    label_column: str,
    group_column: str | None,
    *,
    label_last: bool,
    label_option: str = "data.label_column",
) -> tuple[pd.DataFrame, pd.Series, pd.Series | None]:
    """Separate features, labels and groups of a single table."""
    groups = _pop_group(table, src, group_column)
    if label_last:
        y = table.pop(table.columns[-1])
    else:
        if label_column not in table.columns:
            raise DataError(
                f"{src.path}: no label column '{label_column}' (columns: {_preview(table.columns)}); set {label_option}"
            )
        y = table.pop(label_column)
    if table.shape[1] == 0:
        raise DataError(f"{src.path}: no feature columns besides the label")
    return table, y, groups


def _preview(columns: pd.Index, n: int = 6) -> str:
    names = [str(c) for c in columns]
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _validate_features(X: pd.DataFrame, src: Source) -> pd.DataFrame:
    """Check that every feature cell is a finite number; return X as float32."""
    for col in X.columns:
        if not pd.api.types.is_numeric_dtype(X[col]):
            coerced = pd.to_numeric(X[col], errors="coerce")
            bad = coerced.isna() & X[col].notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"{src.path}: column {_colname(col)} is not numeric at {src.where(i)}: {X[col].iloc[i]!r}")
            X[col] = coerced
    with np.errstate(over="ignore", invalid="ignore"):
        values = X.to_numpy(dtype=np.float32, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        i, j = (int(v) for v in np.argwhere(~finite)[0])
        original = X.iloc[i, j]
        raw = _raw_cell(src, i, j) if src.header_lines >= 0 else None
        shown = raw.strip() if raw is not None else f"{original}"
        try:
            overflow = np.isfinite(float(shown))
        except ValueError:
            overflow = False
        if overflow:
            raise DataError(
                f"{src.path}: column {_colname(X.columns[j])} has {shown} at {src.where(i)}, "
                "beyond the float32 range (about 3.4e38); rescale the beats"
            )
        raise DataError(
            f"{src.path}: column {_colname(X.columns[j])} has {shown} at {src.where(i)}; beats must be finite numbers"
        )
    if values is X.to_numpy(copy=False) and all(X.dtypes == np.float32):
        return X
    return pd.DataFrame(values, index=X.index, columns=X.columns)


def validate_labels(y: pd.Series, src: Source, classes: Sequence[int], min_classes: int = 2) -> pd.Series:
    """Check that labels are integers from ``classes`` and that there are at least ``min_classes`` classes."""
    name = y.name if y.name is not None else "label"
    numeric = pd.to_numeric(y, errors="coerce")
    bad = numeric.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{src.path}: label column {_colname(name)} is not a number at {src.where(i)}: {y.iloc[i]!r}")
    values = numeric.to_numpy(dtype=np.float64)
    not_int = ~np.isfinite(values) | (values != np.round(values))
    if not_int.any():
        i = int(np.flatnonzero(not_int)[0])
        raise DataError(f"{src.path}: label column {_colname(name)} has {values[i]:g} at {src.where(i)}; labels must be integers")
    allowed = set(int(c) for c in classes)
    outside = ~np.isin(values, list(allowed))
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"{src.path}: label column {_colname(name)} has {values[i]:g} at {src.where(i)}, "
            f"outside the configured classes {sorted(allowed)}"
        )
    labels = pd.Series(values.astype(np.int64), index=y.index, name="label")
    present = np.unique(labels.to_numpy())
    if len(present) < min_classes:
        raise DataError(
            f"{src.path}: all {len(labels)} rows have label {int(present[0])}; a classifier needs at least two classes"
        )
    return labels


def class_counts(y: np.ndarray | pd.Series, classes: Sequence[int] = DEFAULT_CLASSES) -> dict[int, int]:
    """Count rows per class, including classes with no rows."""
    values, counts = np.unique(np.asarray(y), return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist()))
    return {int(c): int(found.get(c, 0)) for c in classes} | {int(v): int(n) for v, n in found.items() if v not in set(classes)}


def has_column(path: str | Path, column: str) -> bool:
    """Whether a CSV with a header, a Parquet file or a folder of shards has ``column`` (False when it cannot tell)."""
    p = Path(path)
    try:
        if is_shards(p):  # shards share their columns: the first one tells
            files = shard_files(p)
            p = files[0] if files else p
        if p.suffix.lower() in _PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            return column in pq.read_schema(p).names
        with p.open(newline="", encoding="utf-8", errors="replace") as fh:
            return column in next(csv.reader(fh), [])
    except Exception:  # noqa: BLE001 - the loader reports unreadable files properly
        return False


def load_beats(
    path: str | Path,
    *,
    length: int | None = None,
    label_column: str = "label",
    group_column: str | None = None,
    header: bool | None = None,
    features: Sequence[str] | None = None,
    classes: Sequence[int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None]:
    """Read a beats table once, labels optional (for prediction): ``(X, others, y)``.

    ``X`` holds the validated beat columns: the table without its group and label columns (in a
    headerless CSV, a last column beyond ``length`` is the label). ``others`` holds the columns to
    keep beside predictions: those not in ``features`` (ids, group, label), or without
    ``features`` the label and group columns. ``y`` is the validated label column when there is
    one and ``classes`` is given (one class is enough), else None.
    """
    table, src = _read_table(path, header, {group_column} if group_column else set())
    if src.header_lines == 0:
        labelled = length is not None and table.shape[1] == length + 1
        label = table.columns[-1] if labelled else None
        others = table[[label]].set_axis(["label"], axis=1) if labelled else pd.DataFrame(index=table.index)
    else:
        label = label_column if label_column in table.columns else None
        wanted = set(map(str, features)) if features else None
        keep = (
            [c for c in table.columns if str(c) not in wanted]
            if wanted is not None
            else [c for c in table.columns if c in (label_column, group_column)]
        )
        others = table[keep].reset_index(drop=True)
    y = None
    if classes is not None and label is not None:
        y = validate_labels(table[label], src, classes, min_classes=1).to_numpy()
    if group_column:
        _pop_group(table, src, group_column)
    X = _validate_features(table.drop(columns=[label]) if label is not None else table, src)
    return X, others, y

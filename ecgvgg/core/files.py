"""Output files written atomically (a temporary file renamed into place), and output paths checked before any work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ecgvgg.core.errors import ConfigError


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that replaces ``path`` when the block completes.

    On any error, Ctrl-C included, the temporary file is removed and ``path`` keeps what it had,
    so no half-written output, model or checkpoint is ever left looking finished.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_text(text: str, out: Path) -> None:
    """Write ``text`` to ``out`` atomically."""
    with atomic(out) as tmp:
        tmp.write_text(text)


def write_table(frame: Any, out: Path) -> None:
    """Write a DataFrame as CSV or Parquet (by ``out``'s suffix) atomically."""
    with atomic(out) as tmp:
        frame.to_csv(tmp, index=False) if out.suffix.lower() == ".csv" else frame.to_parquet(tmp, index=False)


def check_out(out: Path, data: Path | None = None, suffixes: tuple[str, ...] = (".csv", ".parquet")) -> None:
    """Refuse an output path that cannot be written, before any work: wrong suffix, a folder, the input itself."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name")
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"--out {out}: use a {' or '.join(suffixes)} file name")
    if data is not None and out.exists() and data.exists() and out.resolve() == data.resolve():
        raise ConfigError(f"--out {out}: is the input file; write the output elsewhere")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write in {parent}")
    if out.exists() and not os.access(out, os.W_OK):
        raise ConfigError(f"--out {out}: the file is not writable")

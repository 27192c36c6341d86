"""Label a raw recording: find its beats, cut them as the model's training beats were cut, classify them.

A recording is a WFDB record, an EDF file or a CSV (one column per lead, ``fs`` given). It is read
in chunks of :data:`CHUNK_S` seconds (with :data:`MARGIN_S` seconds on either side), so memory does
not grow with its length:

1. the R peaks of the first lead are found chunk by chunk with ``sleepecg`` (peaks in a chunk's
   margins belong to its neighbour);
2. the rhythm columns come from all the peaks (:func:`ecgvgg.core.records.rhythm_features`);
3. the reference beat of each lead is the median of up to :data:`REFERENCE_BEATS` beats spread over
   the recording (``record``) or the running median of the preceding minutes (``causal``), as the
   model's ``prepare`` options say;
4. each chunk's beats are cut with ``prepare``'s own code and classified.

No MLflow, rich or Optuna here; the model comes in as an :class:`ecgvgg.core.inference.LoadedModel`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgvgg.core.errors import ConfigError, DataError
from ecgvgg.core.records import AAMI_SYMBOLS, beat_columns, cut_beats, pick_leads, reference_beats, rhythm_features

#: Seconds of signal classified at a time (a multiple of the 10 s over which ``--scale window`` scales).
CHUNK_S = 600.0
#: Seconds read on either side of a chunk so that beats, filters and detection near its edges see whole context.
MARGIN_S = 10.0
#: Beats a ``record`` reference is the median of, spread evenly over the recording.
REFERENCE_BEATS = 3000
#: Lowest sampling rate accepted.
MIN_FS = 100.0
#: Beats closer than this (seconds) to a reference beat are matched to it (AAMI EC57).
MATCH_S = 0.15
#: Annotation symbol of each class name.
SYMBOLS = {"N": "N", "S": "S", "V": "V", "F": "F", "Q": "Q"}


@dataclass
class Recording:
    """A signal to label, read lazily: ``read(start, stop)`` gives ``(samples, leads)`` in physical units."""

    name: str
    fs: float
    length: int
    leads: list[str]
    read: Callable[[int, int], np.ndarray]
    source: Path
    annotations: Path | None = None  # the WFDB record path, for --reference

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.length / self.fs


def open_recordings(inputs: Sequence[Path], fs: float | None = None) -> list[Recording]:
    """Every recording the inputs name: WFDB records (``path/NAME`` without extension, or a folder of
    ``.hea`` files), EDF files or CSV files (one column per lead, ``fs`` required)."""
    out: list[Recording] = []
    for path in inputs:
        path = Path(path)
        if path.is_dir():
            names = sorted(p.with_suffix("") for p in path.glob("*.hea"))
            if not names:
                raise DataError(f"{path}: no WFDB records (.hea files) in this folder")
            out += [_wfdb(p) for p in names]
        elif path.suffix.lower() == ".edf":
            out.append(_edf(path))
        elif path.suffix.lower() in (".csv", ".txt"):
            out.append(_csv(path, fs))
        elif path.with_suffix(".hea").is_file() or Path(f"{path}.hea").is_file():
            out.append(_wfdb(path.with_suffix("") if path.suffix in (".hea", ".dat") else path))
        else:
            raise DataError(
                f"{path}: no such recording (a WFDB record path without extension, a folder of records, an .edf or a .csv file)"
            )
    if fs is not None and any(r.source.suffix.lower() not in (".csv", ".txt") for r in out):
        raise ConfigError("--fs: only for CSV input (WFDB and EDF files carry their sampling rate)")
    named = [r.name for r in out]
    twice = sorted({n for n in named if named.count(n) > 1})
    if twice:
        raise ConfigError(f"recordings named twice: {', '.join(twice)}; their outputs would overwrite each other")
    return out


def _wfdb(path: Path) -> Recording:
    """A WFDB record, checked (header, signal file size) before anything is read."""
    import wfdb

    try:
        header = wfdb.rdheader(str(path))
    except Exception as exc:  # noqa: BLE001 - wfdb raises several types for a damaged header
        raise DataError(f"{path}.hea: cannot read the WFDB header ({type(exc).__name__}: {exc})") from None
    length = int(header.sig_len or 0)
    for name in sorted(set(header.file_name or [])):
        dat = path.parent / name
        if not dat.is_file():
            raise DataError(f"{dat}: missing (the signal file that {path.name}.hea names)")
        fmt = {"212": 1.5, "16": 2, "80": 1, "61": 2, "24": 3, "32": 4, "310": 4 / 3, "311": 4 / 3}
        per_sample = sum(fmt.get(str(f), 2) for f, n in zip(header.fmt, header.file_name) if n == name)
        if dat.stat().st_size + 2 < int(length * per_sample):
            raise DataError(
                f"{dat}: truncated ({dat.stat().st_size} bytes; {path.name}.hea promises "
                f"{length} samples, about {int(length * per_sample)} bytes)"
            )

    def read(start: int, stop: int) -> np.ndarray:
        rec = wfdb.rdrecord(str(path), sampfrom=start, sampto=stop, physical=True)
        return np.asarray(rec.p_signal, dtype=np.float32)

    return Recording(path.name, float(header.fs), length, list(header.sig_name), read, path, path)


def _edf(path: Path) -> Recording:
    """An EDF file, read whole by wfdb once (EDF has no cheap random access in wfdb)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    from wfdb.io.convert.edf import read_edf

    try:
        rec = read_edf(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read as EDF ({type(exc).__name__}: {exc})") from None
    fs = float(rec.fs)
    signal = np.asarray(rec.p_signal, dtype=np.float32)
    return Recording(path.stem, fs, len(signal), list(rec.sig_name), lambda a, b: signal[a:b], path)


def _csv(path: Path, fs: float | None) -> Recording:
    """A CSV with a header row naming the leads, one row per sample."""
    if fs is None:
        raise ConfigError(f"{path}: a CSV carries no sampling rate; give it with --fs HZ")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    table = pd.read_csv(path)
    numeric = table.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & table.notna()
    if bad.to_numpy().any():
        i, j = (int(v) for v in np.argwhere(bad.to_numpy())[0])
        raise DataError(f"{path}: column '{table.columns[j]}' is not numeric at line {i + 2}: {table.iat[i, j]!r}")
    signal = numeric.to_numpy(dtype=np.float32)
    return Recording(path.stem, float(fs), len(signal), [str(c) for c in table.columns], lambda a, b: signal[a:b], path)


@dataclass
class Plan:
    """How a recording is labelled by a model: its leads (by index), the cut and the reference."""

    leads: list[int]
    prepare: dict[str, Any]
    channels: list[str]
    rhythm: list[str]


def plan_for(rec: Recording, contract: Any, lead: str | None = None) -> Plan:
    """Check that a recording can be labelled by a model with this contract, before any signal is read."""
    if rec.fs < MIN_FS:
        raise DataError(f"{rec.source}: sampled at {rec.fs:g} Hz; annotate needs at least {MIN_FS:g} Hz")
    if rec.seconds < 2 * MARGIN_S:
        raise DataError(f"{rec.source}: {rec.seconds:.1f} s long; annotate needs at least {2 * MARGIN_S:g} s")
    made = contract.prepare
    if not made:
        raise ConfigError(
            "the model does not say how its beats were cut (it was trained on a table not made by "
            "ecgvgg prepare); annotate needs a model trained on prepare's beats"
        )
    wanted = list(made.get("leads") or ["MLII"])
    if lead is not None:
        wanted[0] = lead
    if lead is not None and lead not in rec.leads:
        raise DataError(f"{rec.source}: no lead {lead!r} (leads: {', '.join(rec.leads)})")
    try:
        picked = pick_leads(rec.leads, wanted)
    except ValueError:
        raise DataError(
            f"{rec.source}: {len(rec.leads)} lead(s) ({', '.join(rec.leads)}), the model reads "
            f"{len(wanted)} ({', '.join(wanted)})"
        ) from None
    return Plan(picked, made, contract.channels, contract.rhythm_columns)


def chunks(rec: Recording, chunk_s: float = CHUNK_S) -> Iterator[tuple[int, int, int, int]]:
    """``(core_start, core_stop, read_start, read_stop)`` sample ranges covering the recording."""
    step = max(1, int(round(chunk_s * rec.fs)))
    margin = int(round(MARGIN_S * rec.fs))
    for start in range(0, rec.length, step):
        stop = min(start + step, rec.length)
        yield start, stop, max(0, start - margin), min(rec.length, stop + margin)


def _checked(rec: Recording, signal: np.ndarray, leads: Sequence[int], start: int) -> np.ndarray:
    """The chosen leads of a chunk, refused when one is NaN or flat for longer than a few seconds."""
    x = signal[:, list(leads)]
    for k, j in enumerate(leads):
        nan = ~np.isfinite(x[:, k])
        if nan.sum() > 5 * rec.fs:
            raise DataError(
                f"{rec.source}: lead {rec.leads[j]} has {nan.sum() / rec.fs:.0f} s without values "
                f"(NaN) from {start / rec.fs:.0f} s on"
            )
        x[nan, k] = 0.0
    return x


def detect_beats(
    rec: Recording, plan: Plan, chunk_s: float = CHUNK_S, progress: Callable[[float], None] | None = None
) -> np.ndarray:
    """R-peak samples of the whole recording, found chunk by chunk in the first lead with ``sleepecg``."""
    from sleepecg import detect_heartbeats

    found = []
    flat_s = 0.0
    for start, stop, a, b in chunks(rec, chunk_s):
        x = _checked(rec, rec.read(a, b), plan.leads, a)[:, 0].astype(np.float64)
        if np.ptp(x) == 0:
            flat_s += (stop - start) / rec.fs
            continue
        peaks = np.asarray(detect_heartbeats(x, rec.fs), dtype=np.int64) + a
        found.append(peaks[(peaks >= start) & (peaks < stop)])
        if progress is not None:
            progress((stop - start) / rec.seconds / 3)
    peaks = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    if flat_s >= rec.seconds - 1 or len(peaks) < 2:
        raise DataError(f"{rec.source}: lead {rec.leads[plan.leads[0]]} is flat or holds no detectable beats")
    return peaks


def _cut(rec: Recording, plan: Plan, x: np.ndarray, peaks: np.ndarray) -> list[np.ndarray]:
    """Each lead's beats at ``peaks`` (relative to ``x``), cut as the model's training beats were."""
    options = {k: v for k, v in plan.prepare.items() if k in ("method", "before", "after", "rate", "scale")}
    if plan.prepare.get("filter_band"):
        options["filter_band"] = tuple(plan.prepare["filter_band"])
    return [cut_beats(x[:, k], rec.fs, peaks, **options) for k in range(x.shape[1])]


def _chunk_beats(rec: Recording, plan: Plan, peaks: np.ndarray, chunk_s: float) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """``(positions, beats per lead)`` of the peaks, chunk by chunk."""
    for start, stop, a, b in chunks(rec, chunk_s):
        inside = np.flatnonzero((peaks >= start) & (peaks < stop))
        if not len(inside):
            continue
        # scaling windows start at multiples of 10 s from the record's start, as in prepare
        a = int(np.floor(a / rec.fs / 10.0) * 10.0 * rec.fs) if plan.prepare.get("scale") == "window" else a
        x = _checked(rec, rec.read(a, b), plan.leads, a)
        yield inside, _cut(rec, plan, x, peaks[inside] - a)


def record_reference(rec: Recording, plan: Plan, peaks: np.ndarray, chunk_s: float = CHUNK_S) -> list[np.ndarray]:
    """Each lead's median beat over up to :data:`REFERENCE_BEATS` beats spread evenly over the recording."""
    pick = np.unique(np.linspace(0, len(peaks) - 1, min(len(peaks), REFERENCE_BEATS)).round().astype(int))
    parts: list[list[np.ndarray]] = [[] for _ in plan.leads]
    for _, beats in _chunk_beats(rec, plan, peaks[pick], chunk_s):
        for k, b in enumerate(beats):
            parts[k].append(b)
    return [np.median(np.concatenate(p), axis=0) for p in parts]


@dataclass
class Labelled:
    """A labelled recording: one row per detected beat (``sample``, ``time_s``, ``label``, ``p_<class>``)."""

    recording: Recording
    beats: pd.DataFrame
    class_names: list[str]


def label(
    rec: Recording, loaded: Any, plan: Plan, chunk_s: float = CHUNK_S, progress: Callable[[float], None] | None = None
) -> Labelled:
    """Detect, cut and classify every beat of a recording, chunk by chunk."""
    peaks = detect_beats(rec, plan, chunk_s, progress)
    rhythm = rhythm_features(peaks, rec.fs)
    mode = plan.prepare.get("reference", "none")
    fixed = record_reference(rec, plan, peaks, chunk_s) if mode == "record" and plan.channels else None
    window = float(plan.prepare.get("reference_window", 300.0))
    history: list[list[np.ndarray]] = [[] for _ in plan.leads]  # the causal reference's past beats
    past: list[np.ndarray] = []
    cut: list[tuple[np.ndarray, np.ndarray]] = []  # each chunk's beat positions and rows, when the record answers together
    whole = bool(loaded.contract.consensus or loaded.contract.adaptation)
    probs = np.zeros((len(peaks), len(loaded.class_names)), np.float32)
    for inside, beats in _chunk_beats(rec, plan, peaks, chunk_s):
        refs = []
        if plan.channels and any(c.startswith("ref") for c in plan.channels):
            if fixed is not None:
                refs = [np.broadcast_to(r, b.shape) for r, b in zip(fixed, beats)]
            else:  # causal: this chunk's beats after the past window's, the reference of each using no later beat
                keep = np.concatenate([*past, peaks[inside]])
                for k, b in enumerate(beats):
                    both = np.concatenate([*history[k], b]) if history[k] else b
                    refs.append(reference_beats(both, keep, rec.fs, "causal", window)[-len(b) :])
                    history[k] = [both[keep >= peaks[inside][-1] - window * rec.fs]]
                past = [keep[keep >= peaks[inside][-1] - window * rec.fs]]
        rows = loaded.rows(_rows(plan, beats, refs, rhythm.iloc[inside]))
        if whole:  # the whole record's beats answer together once all are cut
            cut.append((inside, rows))
        else:
            probs[inside] = loaded.predict_proba(rows)
        if progress is not None:
            progress(len(inside) / len(peaks) * 2 / 3)
    if cut:
        at = np.concatenate([inside for inside, _ in cut])
        probs[at] = loaded.predict_proba(np.concatenate([rows for _, rows in cut]), groups=np.zeros(len(at)))
    names = list(loaded.class_names)
    frame = pd.DataFrame(
        {"sample": peaks, "time_s": peaks / rec.fs, "label": np.asarray(names, dtype=object)[probs.argmax(axis=1)]}
    )
    for i, n in enumerate(names):
        frame[f"p_{n}"] = probs[:, i]
    return Labelled(rec, frame, names)


def _rows(plan: Plan, beats: list[np.ndarray], refs: list[np.ndarray], rhythm: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns for a chunk's beats: its channels by name, then the rhythm columns."""
    parts = {}
    for k, b in enumerate(beats):
        parts.update(dict(zip(beat_columns(b.shape[1], k), b.T)))
    for k, r in enumerate(refs):
        parts.update(dict(zip(beat_columns(r.shape[1], k, reference=True), np.asarray(r).T)))
    frame = pd.DataFrame(parts)
    for c in plan.rhythm:
        frame[c] = rhythm[c].to_numpy()
    return frame


def compare(labelled: Labelled, samples: np.ndarray, symbols: Sequence[str]) -> dict[str, Any]:
    """AAMI EC57-style comparison with reference beat annotations: each reference beat matched to the closest
    detected beat within :data:`MATCH_S`; detection Se / +P and the class table of the matched beats."""
    from ecgvgg.core.metrics import aami_scores, confusion

    fs = labelled.recording.fs
    names = labelled.class_names
    is_beat = np.array([s in AAMI_SYMBOLS for s in symbols], dtype=bool)
    ref = np.asarray(samples)[is_beat]
    ref_class = np.array([AAMI_SYMBOLS[s] for s, b in zip(symbols, is_beat) if b], dtype=np.int64)
    det = labelled.beats["sample"].to_numpy()
    det_class = np.array([names.index(n) for n in labelled.beats["label"]], dtype=np.int64)
    pairs = match_beats(ref, det, MATCH_S * fs)
    matched = len(pairs)
    table, m = {}, np.zeros((len(names), len(names)), np.int64)
    if matched:
        ri, di = np.array(pairs).T
        m = confusion(ref_class[ri], det_class[di], range(len(names)))
        a = aami_scores(m, names)
        table = {
            n: {"Se": a[n]["Se"], "+P": a[n]["+P"], "F1": a[n]["F1"], "reference_beats": int(m[i].sum())}
            for i, n in enumerate(names)
        }
    return {
        "record": labelled.recording.name,
        "reference_beats": int(len(ref)),
        "detected_beats": int(len(det)),
        "matched_beats": matched,
        "match_window_s": MATCH_S,
        "detection": {"Se": matched / len(ref) if len(ref) else 0.0, "+P": matched / len(det) if len(det) else 0.0},
        "classes": table,
        "confusion": m.tolist(),
        "confusion_rows": "reference class; columns: predicted",
    }


def match_beats(ref: np.ndarray, det: np.ndarray, window: float) -> list[tuple[int, int]]:
    """Pairs ``(reference index, detected index)``: each beat matched at most once, closest first, within ``window``
    samples."""
    ref, det = np.asarray(ref), np.asarray(det)
    if not len(ref) or not len(det):
        return []
    j = np.clip(np.searchsorted(det, ref), 1, len(det) - 1) if len(det) > 1 else np.zeros(len(ref), int)
    left = np.where(j > 0, j - 1, 0)
    near = np.where(np.abs(det[left] - ref) <= np.abs(det[j] - ref), left, j)
    dist = np.abs(det[near] - ref)
    pairs, used = [], set()
    for i in np.argsort(dist, kind="stable"):
        if dist[i] > window:
            break
        d = int(near[i])
        if d in used:  # the nearest is taken: try its other neighbour
            other = d + 1 if d + 1 < len(det) and abs(det[d + 1] - ref[i]) <= window else d - 1
            if other < 0 or other in used or abs(det[other] - ref[i]) > window:
                continue
            d = other
        used.add(d)
        pairs.append((int(i), d))
    return sorted(pairs)

"""From MIT-BIH-style WFDB records (.hea/.dat/.atr) to one row per annotated beat.

Beat symbols map to the AAMI classes (N: N L R e j; S: A a J S; V: V E; F: F; Q: / f Q); other
annotations (rhythm changes, noise, artefacts) are not beats. Two ways to cut a beat:

* ``kachuee``: the scheme behind the Kaggle heartbeat CSVs (Kachuee et al. 2018): resample to
  125 Hz, split into 10 s windows scaled to [0, 1], take 1.2 x the window's median RR interval
  from each annotated R peak, zero-pad to 187 samples;
* ``window``: a fixed window around the R peak (``before``/``after`` seconds), resampled to
  ``rate`` Hz (125 by default) and zero-padded at the record's edges; it holds the P wave.

Every beat also gets rhythm columns (:func:`rhythm_features`, seconds): the RR intervals before
and after it, their local and record averages, and the same divided by the record average.

Also the inter-patient protocol of de Chazal et al. 2004 (DS1 for training, DS2 for testing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

AAMI_SYMBOLS: dict[str, int] = {
    **dict.fromkeys("NLRej", 0),
    **dict.fromkeys("AaJS", 1),
    **dict.fromkeys("VE", 2),
    "F": 3,
    **dict.fromkeys("/fQ", 4),
}
#: Symbols that mark beats but have no AAMI class (counted, not kept).
UNCLASSIFIED_BEATS = {"?", "r", "n", "B"}

#: de Chazal et al. 2004: training records (DS1), test records (DS2); paced records are excluded.
DS1 = (
    "101",
    "106",
    "108",
    "109",
    "112",
    "114",
    "115",
    "116",
    "118",
    "119",
    "122",
    "124",
    "201",
    "203",
    "205",
    "207",
    "208",
    "209",
    "215",
    "220",
    "223",
    "230",
)
DS2 = (
    "100",
    "103",
    "105",
    "111",
    "113",
    "117",
    "121",
    "123",
    "200",
    "202",
    "210",
    "212",
    "213",
    "214",
    "219",
    "221",
    "222",
    "228",
    "231",
    "232",
    "233",
    "234",
)
PACED = ("102", "104", "107", "217")

#: Leads tried in order when ``channel`` is not in a record: MIT-BIH's MLII, then SVDB's ECG1.
LEAD_FALLBACK = ("MLII", "ECG1")
#: Stand-ins by database for a lead a record lacks: SVDB names its leads ECG1 / ECG2, and some MIT-BIH
#: records carry V2, V4 or V5 where most carry V1 (SVDB's ECG2 is closer to a modified V2 than to V1).
LEAD_STAND_INS: dict[str, tuple[str, ...]] = {
    "MLII": ("ECG1", "MLI", "MLIII"),
    "V1": ("V2", "V4", "V5", "ECG2"),
    "V2": ("V1", "V4", "V5", "ECG2"),
    "ECG1": ("MLII",),
    "ECG2": ("V1", "V2", "V4", "V5"),
}
#: How each record's reference beat is formed: ``record`` (the median of all its beats), ``causal``
#: (the running median of the beats before it, see :func:`reference_beats`), or ``none``.
REFERENCE_MODES = ("none", "record", "causal")
#: Rhythm columns written by ``prepare`` (see :func:`rhythm_features`).
RHYTHM_COLUMNS = (
    "rr_pre",
    "rr_post",
    "rr_local",
    "rr_record",
    "rr_median",
    "rr_pre_rel",
    "rr_post_rel",
    "rr_local_rel",
    "rr_pre_local",
    "rr_pre_median",
    "rr_post_median",
    "rr_post_pre",
)
#: The rhythm columns in seconds; the others are ratios (1 where there is no interval to measure).
ABSOLUTE_RHYTHM = ("rr_pre", "rr_post", "rr_local", "rr_record", "rr_median")


@dataclass
class PrepareReport:
    """What ``prepare_records`` did: beats per record, what it skipped and why."""

    beats: dict[str, int] = field(default_factory=dict)
    skipped_records: dict[str, str] = field(default_factory=dict)
    non_beat_annotations: int = 0
    unclassified_beats: int = 0
    leads: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        """One paragraph for the terminal."""
        text = (
            f"{sum(self.beats.values())} beats from {len(self.beats)} records; "
            f"{self.non_beat_annotations} non-beat annotations and {self.unclassified_beats} beats "
            "without an AAMI class not kept"
        )
        if self.leads:
            from collections import Counter

            first = Counter(tuple(v) for v in self.leads.values()).most_common(1)[0][0]
            stand_ins = {r: v for r, v in self.leads.items() if tuple(v) != first}
            text += f"; leads {','.join(first)}"
            if stand_ins:
                text += " (other leads: " + ", ".join(f"{r} {','.join(v)}" for r, v in stand_ins.items()) + ")"
        if self.skipped_records:
            text += "; skipped: " + "; ".join(f"{r} ({why})" for r, why in self.skipped_records.items())
        return text


def rhythm_features(peaks: np.ndarray, fs: float, local: int = 10, around: int = 10) -> pd.DataFrame:
    """RR-interval context of each beat in seconds, from the samples of all beats of one record.

    ``rr_pre`` / ``rr_post``: the interval from the previous beat / to the next one (the first
    beat takes its post-RR as pre-RR, the last its pre-RR as post-RR); ``rr_local``: the mean
    pre-RR of this beat and the ``local - 1`` before it; ``rr_record``: the record's mean RR
    (it looks at the whole record, the future included); ``rr_median``: the median pre-RR of this
    beat and the ``around`` beats on either side (fewer at the record's edges), the surrounding
    rhythm that a run of ectopic beats does not drag as it drags a mean; ``*_rel``: pre-, post- and
    local RR divided by ``rr_record``; ``rr_pre_local``: pre-RR divided by ``rr_local``
    (prematurity); ``rr_pre_median`` / ``rr_post_median``: pre- / post-RR divided by ``rr_median``;
    ``rr_post_pre``: post-RR divided by pre-RR (the pause after an early beat).
    """
    t = np.asarray(peaks, dtype=np.float64) / fs
    n = len(t)
    if n < 2:  # no interval to measure: neutral values
        return pd.DataFrame({c: np.zeros(n) if c in ABSOLUTE_RHYTHM else np.ones(n) for c in RHYTHM_COLUMNS}, dtype=np.float32)
    rr = np.diff(t)
    pre = np.concatenate([rr[:1], rr])
    post = np.concatenate([rr, rr[-1:]])
    csum = np.concatenate([[0.0], np.cumsum(pre)])
    start = np.maximum(np.arange(n) - local + 1, 0)
    loc = (csum[1:] - csum[start]) / (np.arange(n) - start + 1)
    mean = np.full(n, rr.mean())
    med = pd.Series(pre).rolling(2 * around + 1, center=True, min_periods=1).median().to_numpy()
    cols = {
        "rr_pre": pre,
        "rr_post": post,
        "rr_local": loc,
        "rr_record": mean,
        "rr_median": med,
        "rr_pre_rel": pre / mean,
        "rr_post_rel": post / mean,
        "rr_local_rel": loc / mean,
        "rr_pre_local": pre / loc,
        "rr_pre_median": pre / med,
        "rr_post_median": post / med,
        "rr_post_pre": post / pre,
    }
    return pd.DataFrame(cols)[list(RHYTHM_COLUMNS)].astype(np.float32)


def beat_columns(length: int, lead: int = 0, reference: bool = False) -> list[str]:
    """Column names of one channel of ``prepare``'s rows: ``x0..`` (first lead), ``x2_0..`` (second lead),
    ``ref0..`` / ``ref2_0..`` for their reference beats."""
    prefix = ("ref" if reference else "x") + (f"{lead + 1}_" if lead else "")
    return [f"{prefix}{i}" for i in range(length)]


def reference_beats(
    beats: np.ndarray, peaks: np.ndarray, fs: float, mode: str = "record", window_s: float = 300.0, update_s: float = 10.0
) -> np.ndarray:
    """Each beat's reference: the median beat of its record (``record``), or a running median that uses
    no beat later than it (``causal``).

    ``causal``: the beats are taken in blocks of ``update_s`` seconds; a block's reference is the
    median of the beats of the ``window_s`` seconds before the block starts. Beats of the first
    block, which has no such past, take the median of the beats before them (the first beat, itself).
    Most beats of any record are normal, so either median is the patient's own normal beat; no
    label is read.
    """
    beats = np.asarray(beats, dtype=np.float32)
    if mode == "record":
        return np.broadcast_to(np.median(beats, axis=0), beats.shape).astype(np.float32) if len(beats) else beats
    if mode != "causal":
        raise ValueError(f"unknown reference {mode!r}; choose {', '.join(REFERENCE_MODES)}")
    t = np.asarray(peaks, dtype=np.float64) / fs
    out = np.empty_like(beats)
    block = np.floor(t / update_s).astype(np.int64)
    for b in np.unique(block):
        members = np.flatnonzero(block == b)
        start = b * update_s
        past = np.flatnonzero((t >= start - window_s) & (t < start))
        if len(past):
            out[members] = np.median(beats[past], axis=0)
            continue
        for i in members:  # no past block: the beats before this one (the first beat: itself)
            out[i] = np.median(beats[:i], axis=0) if i else beats[0]
    return out


def scale_windows(signal: np.ndarray, fs: float, window_s: float = 10.0) -> np.ndarray:
    """Each ``window_s`` stretch of the signal scaled to [0, 1], as Kachuee et al. scale their windows."""
    x = np.asarray(signal, dtype=np.float32).copy()
    step = max(1, int(round(window_s * fs)))
    for start in range(0, len(x), step):
        seg = x[start : start + step]
        lo, span = seg.min(), seg.max() - seg.min()
        x[start : start + step] = (seg - lo) / span if span > 0 else 0.0
    return x


def scale_to_r_peaks(signal: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """The signal less its median, divided by the median height of its R peaks (gain and patient-independent)."""
    x = np.asarray(signal, dtype=np.float32)
    centred = x - np.median(x)
    peaks = np.asarray(peaks)
    peaks = peaks[(peaks >= 0) & (peaks < len(x))]
    height = float(np.median(np.abs(centred[peaks]))) if len(peaks) else 0.0
    return (centred / height if height > 0 else centred).astype(np.float32)


def bandpass(signal: np.ndarray, fs: float, low: float = 0.5, high: float = 40.0) -> np.ndarray:
    """Zero-phase Butterworth band-pass filter (order 3)."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(3, [low, min(high, 0.45 * fs)], btype="band", fs=fs, output="sos")
    return sosfiltfilt(sos, signal).astype(np.float32)


def resample(signal: np.ndarray, fs: float, target_fs: float) -> np.ndarray:
    """Resample a 1-D signal by linear interpolation."""
    if fs == target_fs:
        return np.asarray(signal, dtype=np.float32)
    n = int(round(len(signal) * target_fs / fs))
    t_new = np.arange(n) / target_fs
    return np.interp(t_new, np.arange(len(signal)) / fs, signal).astype(np.float32)


def cut_kachuee(
    signal: np.ndarray, fs: float, peaks: np.ndarray, length: int = 187, target_fs: float = 125.0, window_s: float = 10.0
) -> np.ndarray:
    """Cut beats as Kachuee et al. 2018: per 10 s window, 1.2 x median RR from each R peak."""
    x = resample(signal, fs, target_fs)
    r = np.round(np.asarray(peaks) * target_fs / fs).astype(int)
    out = np.zeros((len(r), length), dtype=np.float32)
    win = int(window_s * target_fs)
    for start in range(0, max(len(x), 1), win):
        in_win = np.flatnonzero((r >= start) & (r < start + win))
        if not len(in_win):
            continue
        seg = x[start : start + win]
        lo, span = seg.min(), seg.max() - seg.min()
        seg = (seg - lo) / span if span > 0 else np.zeros_like(seg)
        rr = np.diff(r[in_win])
        beat_len = int(1.2 * np.median(rr)) if len(rr) else length
        beat_len = max(1, min(beat_len, length))
        for i in in_win:
            piece = seg[r[i] - start : r[i] - start + beat_len]
            out[i, : len(piece)] = piece
    return out


def cut_window(
    signal: np.ndarray, fs: float, peaks: np.ndarray, before: float = 0.25, after: float = 0.45, target_fs: float = 125.0
) -> np.ndarray:
    """Cut a fixed window around each R peak, resampled to ``target_fs``; zero-padded at the edges."""
    x = resample(signal, fs, target_fs)
    r = np.round(np.asarray(peaks) * target_fs / fs).astype(int)
    b, a = int(round(before * target_fs)), int(round(after * target_fs))
    padded = np.concatenate([np.zeros(b, np.float32), x, np.zeros(a, np.float32)])
    idx = r[:, None] + np.arange(b + a)[None, :]
    return padded[idx]


def beats_from_signal(
    signal: np.ndarray,
    fs: float,
    samples: np.ndarray,
    symbols: Iterable[str],
    *,
    method: str = "kachuee",
    filter_band: tuple[float, float] | None = None,
    before: float = 0.25,
    after: float = 0.45,
    rate: float = 125.0,
    scale: str = "none",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame, int, int]:
    """Beats, AAMI labels, R-peak samples and rhythm columns of one signal, plus the counts of annotations not kept.

    The RR sequence runs over every beat annotation, those without an AAMI class included;
    non-beat annotations (rhythm, noise, comments) are not beats and do not interrupt it.
    """
    symbols = list(symbols)
    samples = np.asarray(samples)
    is_beat = np.array([s in AAMI_SYMBOLS for s in symbols], dtype=bool)
    any_beat = np.array([s in AAMI_SYMBOLS or s in UNCLASSIFIED_BEATS for s in symbols], dtype=bool)
    unclassified = sum(s in UNCLASSIFIED_BEATS for s in symbols)
    non_beat = len(symbols) - int(any_beat.sum())
    rhythm = rhythm_features(samples[any_beat], fs)[is_beat[any_beat]].reset_index(drop=True)
    peaks = samples[is_beat]
    labels = np.array([AAMI_SYMBOLS[s] for s, keep in zip(symbols, is_beat) if keep], dtype=np.int64)
    beats = cut_beats(
        signal, fs, peaks, method=method, filter_band=filter_band, before=before, after=after, rate=rate, scale=scale
    )
    return beats, labels, peaks, rhythm, non_beat, unclassified


def cut_beats(
    signal: np.ndarray,
    fs: float,
    peaks: np.ndarray,
    *,
    method: str = "kachuee",
    filter_band: tuple[float, float] | None = None,
    before: float = 0.25,
    after: float = 0.45,
    rate: float = 125.0,
    scale: str = "none",
) -> np.ndarray:
    """One row per R peak of a 1-D signal: filtered, scaled and cut as ``prepare`` does (see the module).

    ``scale="record"`` centres the signal on its median and divides it by the median height of its R
    peaks; ``scale="window"`` scales each 10 s of it to [0, 1] as ``kachuee`` does: either way beats of
    patients and leads with other gains look alike.
    """
    x = np.asarray(signal, dtype=np.float32)
    peaks = np.asarray(peaks)
    if filter_band is not None:
        x = bandpass(x, fs, *filter_band)
    if scale == "record":
        x = scale_to_r_peaks(x, peaks)
    elif scale == "window":
        x = scale_windows(x, fs)
    elif scale != "none":
        raise ValueError(f"unknown scale {scale!r}; choose none, record or window")
    if method == "kachuee":
        return cut_kachuee(x, fs, peaks)
    if method == "window":
        return cut_window(x, fs, peaks, before, after, target_fs=rate)
    raise ValueError(f"unknown beat method {method!r}; choose kachuee or window")


def prepare_records(
    records_dir: str | Path,
    *,
    method: str = "kachuee",
    channel: str | int = "MLII",
    leads: Sequence[str] | None = None,
    reference: str = "none",
    reference_window: float = 300.0,
    filter_band: tuple[float, float] | None = None,
    before: float = 0.25,
    after: float = 0.45,
    rate: float = 125.0,
    scale: str = "none",
    annotator: str = "atr",
    on_record: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, PrepareReport]:
    """Read every WFDB record in ``records_dir`` into one row per beat: ``x0..``, ``rr_*``, ``label``, ``record``, ``sample``.

    ``channel`` names the lead; a record without it uses MLII, else ECG1 (SVDB), else its first
    signal. ``leads`` (e.g. ``["MLII", "V1"]``) cuts several leads instead, one channel each
    (``x0..``, ``x2_0..``), each found by :func:`pick_leads`; the lead each record gave is in the
    report and in the table's ``attrs["leads"]``. ``reference`` adds each channel's reference beat
    (:func:`reference_beats`: ``record`` or ``causal``, over ``reference_window`` seconds) as
    ``ref0..`` / ``ref2_0..``. Signals at another rate are resampled; ``scale`` and the cut are those of
    :func:`cut_beats`. A damaged, incomplete or unannotated record is skipped and named in the report.
    """
    if reference not in REFERENCE_MODES:
        raise ValueError(f"unknown reference {reference!r}; choose {', '.join(REFERENCE_MODES)}")
    cut = {"method": method, "filter_band": filter_band, "before": before, "after": after, "rate": rate, "scale": scale}
    root = Path(records_dir)
    if not root.is_dir():
        from ecgvgg.core.errors import DataError

        raise DataError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder of WFDB records")
    names = sorted(p.stem for p in root.glob("*.hea"))
    report = PrepareReport()
    frames = []
    for name in names:
        if on_record is not None:
            on_record(name)
        if not (root / f"{name}.{annotator}").is_file():
            report.skipped_records[name] = (
                f"{name}.{annotator} not found: prepare needs the record's beat annotations "
                "(--annotator names another annotation file)"
            )
            continue
        try:
            frame, picked, non_beat, unclassified = _record_frame(
                root / name, annotator, leads, channel, cut, reference, reference_window
            )
        except Exception as exc:  # noqa: BLE001 - any damage skips the record, and says so
            report.skipped_records[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            continue
        frames.append(frame)
        report.beats[name] = len(frame)
        report.leads[name] = picked
        report.non_beat_annotations += non_beat
        report.unclassified_beats += unclassified
    made = {
        **cut,
        "filter_band": list(filter_band) if filter_band else None,
        "leads": list(leads) if leads else [channel if isinstance(channel, str) else "MLII"],
        "reference": reference,
        "reference_window": reference_window,
    }
    return _joined(frames, report, f"{root}: no readable WFDB records ({len(names)} .hea files)", made), report


def _joined(frames: list[pd.DataFrame], report: PrepareReport, nothing: str, made: dict) -> pd.DataFrame:
    """The records' rows as one table that keeps each record's leads and ``prepare``'s options in its ``attrs``;
    no rows at all is an error that says why the first record was skipped."""
    if not frames:
        from ecgvgg.core.errors import DataError

        why = next(iter(report.skipped_records.values()), None)
        raise DataError(nothing + (f"; {why}" if why else ""))
    table = pd.concat(frames, ignore_index=True)
    table.attrs["leads"] = {r: ",".join(v) for r, v in report.leads.items()}
    table.attrs["prepare"] = made
    return table


def _record_frame(
    path: Path,
    annotator: str,
    leads: Sequence[str] | None,
    channel: str | int,
    cut: dict,
    reference: str,
    reference_window: float,
) -> tuple[pd.DataFrame, list[str], int, int]:
    """One record's beat rows (every lead, their references, rhythm, label, record, sample), the leads it gave,
    and its counts of annotations not kept."""
    import wfdb

    rec = wfdb.rdrecord(str(path))
    ann = wfdb.rdann(str(path), annotator)
    cols = pick_leads(rec.sig_name, leads) if leads else [lead_index(rec.sig_name, channel)]
    channels, refs = [], []
    for col in cols:
        beats, labels, peaks, rhythm, non_beat, unclassified = beats_from_signal(
            rec.p_signal[:, col], rec.fs, ann.sample, ann.symbol, **cut
        )
        channels.append(beats)
        if reference != "none":
            refs.append(reference_beats(beats, peaks, rec.fs, reference, reference_window))
    parts = [pd.DataFrame(b, columns=beat_columns(b.shape[1], k)) for k, b in enumerate(channels)]
    parts += [pd.DataFrame(r, columns=beat_columns(r.shape[1], k, reference=True)) for k, r in enumerate(refs)]
    frame = pd.concat([*parts, rhythm], axis=1)
    frame["label"] = labels
    frame["record"] = path.name
    frame["sample"] = peaks.astype(np.int64)
    return frame, [str(rec.sig_name[c]) for c in cols], non_beat, unclassified


def prepare_options_of(path: str | Path) -> dict | None:
    """How ``prepare`` made a Parquet table (its ``attrs["prepare"]``), or None when it cannot tell."""
    try:
        import json

        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta.get(b"PANDAS_ATTRS", b"{}")).get("prepare")
    except Exception:  # noqa: BLE001 - a CSV, a folder of shards, an older table: unknown
        return None


def lead_index(names: Sequence[str], channel: str | int) -> int:
    """Index of the lead to use: ``channel`` by name or number, else the first of :data:`LEAD_FALLBACK`, else 0."""
    if isinstance(channel, int):
        return channel
    for name in (channel, *LEAD_FALLBACK):
        if name in names:
            return list(names).index(name)
    return 0


def pick_leads(names: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Indices of the ``wanted`` leads in a record, each by name, else by a stand-in of
    :data:`LEAD_STAND_INS`, else the first signal not yet taken; a record with too few signals raises."""
    names = list(names)
    if len(names) < len(wanted):
        raise ValueError(f"{len(wanted)} leads wanted ({','.join(wanted)}), the record has {len(names)}")
    taken: list[int] = []
    for lead in wanted:
        options = [lead, *LEAD_STAND_INS.get(lead, ())]
        index = next((names.index(o) for o in options if o in names and names.index(o) not in taken), None)
        taken.append(index if index is not None else next(i for i in range(len(names)) if i not in taken))
    return taken

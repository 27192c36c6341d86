"""``ecgvgg annotate``: label every beat of raw recordings, with the packaged model or a trained one."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.markup import escape

from ecgvgg.core.errors import ConfigError, DataError
from ecgvgg.cli.exits import guard, load_tensorflow
from ecgvgg.cli.models import check_consensus
from ecgvgg.cli.report import console, err_console

#: The files ``annotate`` writes for each recording, by extension.
OUTPUTS = ("ecgvgg", "csv", "png")
from ecgvgg.pretrained import MODEL as PRETRAINED  # noqa: E402 - the model packaged with ecgvgg


def annotate(
    ctx: typer.Context,
    inputs: Annotated[
        list[Path],
        typer.Argument(help="WFDB records (path without extension, or a folder), EDF files or CSV files (one column per lead)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for RECORD.ecgvgg, RECORD.csv, RECORD.png.")],
    model: Annotated[str, typer.Option(help="pretrained (packaged), run:RUN_ID or a .keras file.")] = "pretrained",
    reference: Annotated[
        Optional[str],
        typer.Option(help="Compare with the record's reference annotations of this extension (e.g. atr), AAMI EC57 style."),
    ] = None,
    lead: Annotated[Optional[str], typer.Option(help="The lead to read first (default: the model's).")] = None,
    fs: Annotated[Optional[float], typer.Option(help="Sampling rate of CSV input, in Hz.")] = None,
    consensus: Annotated[
        Optional[float],
        typer.Option(
            help="Record consensus: beats of the recording of one shape and rhythm move their probabilities this far "
            "(0 to below 1) towards their cluster's mean; labels then depend on later beats too. 0: none. "
            "Default: the model's own (none for the packaged model)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier results in the output folder.")] = False,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow store for --model run:RUN_ID.")] = None,
) -> None:
    """Find and classify every beat of raw recordings; write WFDB annotations, a CSV and a picture per record."""
    from ecgvgg.core.annotate import open_recordings, plan_for

    with guard(ctx.obj) as inv:
        if fs is not None and fs <= 0:
            raise ConfigError("--fs must be > 0 Hz")
        check_consensus(consensus)
        recordings = open_recordings(inputs, fs)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: is a file; give a folder")
        for rec in recordings:  # every check before any work: no partial output
            taken = [out / f"{rec.name}.{ext}" for ext in (*OUTPUTS, "json") if (out / f"{rec.name}.{ext}").exists()]
            if taken and not overwrite:
                raise ConfigError(f"{taken[0]}: results for {rec.name} are already there; pass --overwrite to replace them")
            if reference is not None and (rec.annotations is None or not Path(f"{rec.annotations}.{reference}").is_file()):
                raise DataError(f"{rec.source}: no reference annotations {rec.name}.{reference} (--reference)")
        path, source = _model_path(model, tracking_uri)
        contract = _contract(path, model)
        plans = [plan_for(rec, contract, lead) for rec in recordings]
        load_tensorflow(inv)
        from ecgvgg.core.inference import load_model

        loaded = load_model(path, source=source)
        if consensus is not None:
            loaded.contract = loaded.contract.with_consensus_weight(consensus)
        results = []
        for rec, plan in zip(recordings, plans):
            results.append(_annotate_one(rec, plan, loaded, out, reference))
    for text in results:
        console.print(text, soft_wrap=True)


def _model_path(model: str, tracking_uri: Optional[str]) -> tuple[Path, Optional[str]]:
    """The model file ``--model`` names and how to call it, found without TensorFlow (a run id resolved once)."""
    if model.startswith("run:"):
        from ecgvgg.tracking import store
        from ecgvgg.core.config import TrackingConfig

        uri = TrackingConfig(uri=tracking_uri).resolved_uri()
        run_id = store.resolve_run_id(uri, model[4:], "--model")
        return store.run_model_path(uri, run_id), f"run {run_id}"
    if model == "pretrained":
        return PRETRAINED, "the packaged model"
    return Path(model), None


def _contract(path: Path, model: str) -> Any:
    """The input contract inside a model file, read without TensorFlow."""
    from ecgvgg.core.inference import read_contract

    if not path.is_file():
        what = "the packaged model" if model == "pretrained" else "--model"
        raise ConfigError(f"{path}: no such model file ({what})")
    contract = read_contract(path)
    if contract is None:
        raise ConfigError(f"{path}: no input contract in this model file (train it with ecgvgg run)")
    return contract


def _annotate_one(rec: Any, plan: Any, loaded: Any, out: Path, reference: Optional[str]) -> str:
    """Label one recording and write its files together (a temporary folder moved into place)."""
    import wfdb
    from rich.progress import Progress

    from ecgvgg.core.annotate import SYMBOLS, compare, label
    from ecgvgg.core.figures import recording_figure

    with Progress(console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
        task = progress.add_task(f"{rec.name}", total=1.0)
        labelled = label(rec, loaded, plan, progress=lambda f: progress.advance(task, f))
    beats = labelled.beats
    comparison = None
    if reference is not None:
        ann = wfdb.rdann(str(rec.annotations), reference)
        comparison = compare(labelled, ann.sample, ann.symbol)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{rec.name}-") as tmp:
        work = Path(tmp)
        wfdb.wrann(
            rec.name,
            "ecgvgg",
            beats["sample"].to_numpy(),
            symbol=[SYMBOLS.get(s, "Q") for s in beats["label"]],
            write_dir=str(work),
            fs=rec.fs,
        )
        beats.to_csv(work / f"{rec.name}.csv", index=False, float_format="%.5g")
        start = _strip_start(beats, rec)
        signal = rec.read(start, min(rec.length, start + int(10 * rec.fs)))[:, plan.leads[0]]
        title = f"{rec.name}: {len(beats)} beats, lead {rec.leads[plan.leads[0]]}"
        recording_figure(np.nan_to_num(signal), rec.fs, start, beats, title).savefig(work / f"{rec.name}.png", dpi=110)
        if comparison is not None:
            (work / f"{rec.name}.json").write_text(json.dumps(comparison, indent=2))
        for f in work.iterdir():
            shutil.move(str(f), out / f.name)
    counts = beats["label"].value_counts()
    text = (
        f"{escape(rec.name)}: {len(beats)} beats ("
        + ", ".join(f"{n} {int(counts.get(n, 0))}" for n in labelled.class_names)
        + f") -> {escape(str(out))}"
    )
    if comparison is not None:
        d = comparison["detection"]
        text += (
            f"\n  detection Se {d['Se']:.4f} +P {d['+P']:.4f} ({comparison['matched_beats']} of "
            f"{comparison['reference_beats']} reference beats within {comparison['match_window_s'] * 1000:.0f} ms)"
        )
        for n, c in comparison["classes"].items():
            if c["reference_beats"]:
                text += f"\n  {n}: Se {c['Se']:.3f} +P {c['+P']:.3f} F1 {c['F1']:.3f} ({c['reference_beats']} beats)"
    return text


def _strip_start(beats: Any, rec: Any) -> int:
    """Where the picture's 10 s strip starts: 5 s before the first beat that is not N, else at the start."""
    ectopic = beats[beats["label"] != "N"]
    first = int(ectopic["sample"].iloc[0]) if len(ectopic) else 0
    return int(max(0, min(first - 5 * rec.fs, rec.length - 10 * rec.fs)))

"""The commands that use a trained model (``--run RUN_ID`` or ``--model PATH``): evaluate, predict, explain, export.

Like every command, each checks its options, files and the run id before TensorFlow loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from ecgvgg.core.errors import ConfigError, DataError
from ecgvgg.cli.exits import Invocation, guard, load_tensorflow
from ecgvgg.cli.report import console

TrackingUri = Annotated[Optional[str], typer.Option(help="MLflow store for --run.")]
GroupColumn = Annotated[
    Optional[str],
    typer.Option(
        help="Group column: not a feature; the records for a model with record consensus or adaptation "
        "(default: the one the model was trained with, when the table has it)."
    ),
]

Consensus = Annotated[
    Optional[float],
    typer.Option(
        help="Record consensus, 0 to below 1: the beats of one record (the group column) of one shape and rhythm move "
        "their probabilities this far towards their cluster's mean. 0: none. Default: the model's own."
    ),
]


def check_consensus(weight: Optional[float]) -> None:
    """Refuse a ``--consensus`` weight outside [0, 1) in one line."""
    if weight is not None and not 0 <= weight < 1:
        raise ConfigError(f"--consensus {weight:g}: must be at least 0 and below 1")


def _with_consensus(loaded: Any, weight: Optional[float], groups: Any, data: Path) -> None:
    """Make ``loaded`` answer with record consensus of ``weight`` (None: its own); a weight asked for needs the records."""
    if weight is None:
        return
    if weight and groups is None:
        raise DataError(f"{data}: --consensus needs each beat's record, and the table has no group column (--group-column)")
    loaded.contract = loaded.contract.with_consensus_weight(weight)


def evaluate(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Labelled beats (CSV or Parquet).")],
    run_id: Annotated[Optional[str], typer.Option("--run", help="Score the model logged by this MLflow run.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="Score this .keras model file.")] = None,
    label_column: Annotated[
        Optional[str], typer.Option(help="Label column of a table with a header (default: the one the model was trained with).")
    ] = None,
    group_column: GroupColumn = None,
    consensus: Consensus = None,
    tracking_uri: TrackingUri = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print scores as JSON.")] = False,
) -> None:
    """Score a saved model on another table; print the per-class table or JSON.

    The table is read as the model's training table was (label column, group column, header)
    unless the options say otherwise.
    """
    from ecgvgg.core.data import load_xy
    from ecgvgg.core.inference import table_settings, warn_seen_groups

    with guard(ctx.obj) as inv:
        check_consensus(consensus)
        data = _data_file(data)
        loaded = _load(inv, run_id, model, tracking_uri)
        label, group, header = table_settings(loaded, data, label_column, group_column)
        X, y, groups = load_xy(
            data, label_column=label, group_column=group, header=header, classes=loaded.classes, label_option="--label-column"
        )
        warn_seen_groups(loaded, data, groups)
        _with_consensus(loaded, consensus, groups, data)
        scores = loaded.score(X, y, groups)  # the records, for record consensus or adaptation
    names = loaded.class_names
    if as_json:
        from ecgvgg.core.metrics import aami_scores

        by_class = {
            m: {names[i]: scores[m][c] for i, c in enumerate(loaded.classes)} for m in ("precision", "recall", "f1", "support")
        }
        print(
            json.dumps(
                {
                    "macro_f1": scores["macro_f1"],
                    "accuracy": scores["accuracy"],
                    **by_class,
                    "aami_ec57": aami_scores(scores["confusion_matrix"], names),
                    "confusion_matrix": scores["confusion_matrix"],
                    "class_names": names,
                },
                indent=2,
            )
        )
    else:
        from ecgvgg.cli.report import scores_table

        console.print(scores_table(scores, names, f"{data}"))


def _data_file(data: Path) -> Path:
    """The table to read: ``sample:NAME`` names a bundled sample; a missing file is reported before TensorFlow loads."""
    from ecgvgg.core.config import data_path

    data = data_path(str(data))
    if not data.exists():
        raise DataError(f"{data}: no such file")
    return data


def _load(inv: Invocation, run_id: Optional[str], model: Optional[Path], tracking_uri: Optional[str]) -> Any:
    """The model to score with: a file, or a run's (its id checked before TensorFlow loads)."""
    if (run_id is None) == (model is None):
        raise ConfigError("give exactly one of --run RUN_ID or --model PATH")
    if run_id is None:
        from ecgvgg.core.inference import load_model

        assert model is not None
        load_tensorflow(inv)
        return load_model(model)
    from ecgvgg.tracking import store
    from ecgvgg.core.config import TrackingConfig

    uri = TrackingConfig(uri=tracking_uri).resolved_uri()
    db = store.sqlite_path(uri)
    if db is not None and not db.is_file():  # never create a store for a read
        raise ConfigError(
            f"--run {run_id}: no MLflow store at {db.resolve()} (from {uri}); "
            "pass --tracking-uri or run from the folder that holds mlruns/"
        )
    run_id = store.resolve_run_id(uri, run_id)  # before TensorFlow: an unknown or ambiguous id is reported at once
    load_tensorflow(inv)
    return store.load_run_model(uri, run_id)


def predict(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Beats to classify (CSV or Parquet; labels optional).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.csv or .parquet).")],
    model: Annotated[Optional[Path], typer.Option("--model", help=".keras model file.")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run", help="Use the model logged by this MLflow run.")] = None,
    label_column: Annotated[
        Optional[str], typer.Option(help="Label column to ignore if present (default: the one the model was trained with).")
    ] = None,
    group_column: GroupColumn = None,
    consensus: Consensus = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Write predicted classes and class probabilities, one row per beat."""
    import pandas as pd

    from ecgvgg.core.files import check_out, write_table
    from ecgvgg.core.inference import read_beats, warn_seen_groups

    with guard(ctx.obj) as inv:
        check_consensus(consensus)
        data = _data_file(data)
        check_out(out, data)
        loaded = _load(inv, run_id, model, tracking_uri)
        X, kept, _, group = read_beats(loaded, data, label_column, group_column)
        if group and group in kept:
            warn_seen_groups(loaded, data, kept[group], scored=False)
        records = kept[group].to_numpy() if group and group in kept else None  # for record consensus or adaptation
        _with_consensus(loaded, consensus, records, data)
        predicted = loaded.predict_frame(X, groups=records)
        frame = pd.concat([kept.drop(columns=[c for c in kept.columns if c in ("prediction", "class_name")]), predicted], axis=1)
        write_table(frame, out)
    console.print(f"wrote {len(frame)} predictions to {escape(str(out))}")


def explain(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Beats to explain (CSV or Parquet; labels optional).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for saliency.parquet and gradcam_<class>.png.")],
    run_id: Annotated[Optional[str], typer.Option("--run", help="Explain the model logged by this MLflow run.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="Explain this .keras model file.")] = None,
    rows: Annotated[Optional[str], typer.Option(help="Only these rows, by position: e.g. 0,5,10-20.")] = None,
    per_class: Annotated[
        Optional[int],
        typer.Option(min=1, help="At most N beats of each class (by label when the table has labels, else by prediction)."),
    ] = None,
    layer: Annotated[
        Optional[str],
        typer.Option(help="Convolution to explain (default: the deepest with at least 16 positions, e.g. block4_conv3)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for --per-class's draw.")] = 0,
    label_column: Annotated[
        Optional[str], typer.Option(help="Label column (default: the one the model was trained with).")
    ] = None,
    group_column: Annotated[Optional[str], typer.Option(help="Group column to ignore.")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Grad-CAM: where in each beat the model looks; one saliency row per beat and a picture per predicted class."""
    from ecgvgg.core.explain import gradcam, members, target_layer

    with guard(ctx.obj) as inv:
        data = _data_file(data)
        if out.is_file():
            raise ConfigError(f"--out {out}: is a file; give a folder")
        if rows and per_class:
            raise ConfigError("give --rows or --per-class, not both")
        wanted = _parse_rows(rows) if rows else None
        loaded = _load(inv, run_id, model, tracking_uri)
        X, y = _beats_and_labels(loaded, data, label_column, group_column)
        picked = _pick(loaded, X, y, wanted, per_class, seed)
        try:
            explained = gradcam(loaded.model, X[picked], loaded.contract, layer=layer)
        except ValueError as exc:
            raise ConfigError(f"--layer {layer}: {exc}") from None
        written = _write_explanation(loaded, X[picked], None if y is None else y[picked], picked, explained, out)
    used = layer or target_layer(members(loaded.model)[0])
    console.print(
        f"explained {len(picked)} beats with Grad-CAM on {used}: wrote {escape(str(written[0]))} and "
        f"{len(written) - 1} class picture(s) in {escape(str(out))}",
        soft_wrap=True,
    )


def _parse_rows(text: str) -> list[int]:
    """``--rows 0,5,10-20`` as row positions."""
    picked: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            picked += list(range(int(first), int(last) + 1)) if dash else [int(first)]
        except ValueError:
            raise ConfigError(f"--rows {text!r}: expected positions and ranges like 0,5,10-20") from None
    return picked


def _beats_and_labels(loaded: Any, data: Path, label_column: Optional[str], group_column: Optional[str]) -> Any:
    """The table's rows in the model's column order, and its labels when it has them (else None)."""
    from ecgvgg.core.inference import read_beats

    X, _, y, _ = read_beats(loaded, data, label_column, group_column, labelled=True)
    return loaded.rows(X), y


def _pick(loaded: Any, X: Any, y: Any, wanted: Optional[list[int]], per_class: Optional[int], seed: int) -> Any:
    """Row positions to explain: those asked for, up to ``per_class`` of each class, or all."""
    import numpy as np

    from ecgvgg.core.explain import pick_rows

    if wanted is not None:
        outside = [r for r in wanted if not 0 <= r < len(X)]
        if outside:
            raise DataError(f"--rows {outside[0]}: the table has {len(X)} rows (0 to {len(X) - 1})")
        return np.asarray(wanted, dtype=np.int64)
    if per_class is None:
        return np.arange(len(X))
    classes = y if y is not None else np.asarray(loaded.classes)[np.argmax(loaded.predict_proba(X), axis=1)]
    return pick_rows(np.asarray(classes), per_class, seed)


def _write_explanation(loaded: Any, X: Any, y: Any, picked: Any, explained: Any, out: Path) -> list[Path]:
    """Write ``saliency.parquet`` and one ``gradcam_<class>.png`` per predicted class; return the paths written."""
    import numpy as np
    import pandas as pd

    from ecgvgg.core.explain import ClassSaliency
    from ecgvgg.core.figures import class_saliency_figures, write_figure
    from ecgvgg.core.files import write_table

    names, classes, idx = loaded.class_names, np.asarray(loaded.classes), explained.class_index
    frame = pd.DataFrame(
        {
            "row": picked,
            **({"label": y} if y is not None else {}),
            "prediction": classes[idx],
            "class_name": np.asarray(names, dtype=object)[idx],
            "probability": explained.probs[np.arange(len(idx)), idx].astype(np.float64),
        }
    )
    values = pd.DataFrame(explained.saliency, columns=[f"saliency_{i}" for i in range(explained.saliency.shape[1])])
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "saliency.parquet"]
    write_table(pd.concat([frame, values], axis=1), written[0])
    for name, figure in class_saliency_figures(ClassSaliency.of(X, explained, names), str(loaded.source)):
        written.append(out / f"gradcam_{name}.png")
        write_figure(figure, written[-1])
    return written


def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="model.onnx, model.tflite, or a folder for savedmodel.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx, savedmodel or litert.")] = "onnx",
    run_id: Annotated[Optional[str], typer.Option("--run", help="Export the model logged by this MLflow run.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="Export this .keras model file.")] = None,
    tracking_uri: TrackingUri = None,
    tolerance: Annotated[
        float, typer.Option(min=0, help="Largest accepted difference from the Keras model's probabilities.")
    ] = 1e-4,
) -> None:
    """Export a model (dynamic batch, contract as JSON beside it); refused unless it answers as Keras does within 1e-4."""
    from ecgvgg.core.export import check_exportable, check_request, check_rows, export_model

    with guard(ctx.obj) as inv:
        check_request(fmt, out)
        loaded = _load(inv, run_id, model, tracking_uri)
        check_exportable(loaded.contract, fmt)
        rows, what = check_rows(loaded.contract)
        done = export_model(loaded.model, loaded.contract, loaded.prepare(rows), fmt, out, tolerance)
    console.print(
        f"wrote {fmt} model {escape(str(done.path))} and its input contract "
        f"{escape(str(done.contract_path))}; on {what} its probabilities are within "
        f"{done.max_abs_diff:.2g} of the Keras model's (tolerance {tolerance:g})",
        soft_wrap=True,
    )

"""The command line's help: one-line summaries, examples and readable placeholders for every command."""

from __future__ import annotations

from pathlib import Path

import typer


#: One line per command in ``ecgvgg --help``.
SUMMARIES = {
    "run": "Train and score a pipeline in one MLflow run.",
    "evaluate": "Score a saved model on a labelled table.",
    "predict": "Write each beat's predicted class and probabilities.",
    "explain": "Grad-CAM: where in each beat the model looks.",
    "export": "Export a model to ONNX, SavedModel or LiteRT.",
    "prepare": "Cut annotated WFDB records into a beats table.",
    "download": "Download MIT-BIH records from PhysioNet.",
    "annotate": "Find and classify every beat of raw recordings.",
    "sweep": "Run every combination of a grid.",
    "tune": "Search hyperparameters with Optuna.",
    "runs": "List the runs of an MLflow store.",
}
#: Examples shown at the end of a command's help.
EXAMPLES = {
    "run": [
        "ecgvgg run pipelines/adasyn_vgg.yaml",
        "ecgvgg run pipelines/adasyn_vgg.yaml --set training.epochs=5 --set split.folds=5",
    ],
    "evaluate": ["ecgvgg evaluate --run 1a2b3c4d beats.parquet"],
    "predict": ["ecgvgg predict --run 1a2b3c4d beats.parquet -o predictions.csv"],
    "explain": ["ecgvgg explain beats.parquet --run 1a2b3c4d -o why/ --per-class 50"],
    "export": ["ecgvgg export --run 1a2b3c4d --format onnx -o model.onnx"],
    "prepare": [
        "ecgvgg prepare mitdb/ -o mitdb_beats.parquet",
        "ecgvgg prepare mitdb/ -o beats.parquet --method window --leads MLII,V1 --reference record",
    ],
    "download": ["ecgvgg download mitdb mitdb/"],
    "annotate": [
        "ecgvgg annotate mitdb/100 -o labels/",
        "ecgvgg annotate mitdb/100 -o labels/ --reference atr",
        "ecgvgg annotate holter.csv --fs 250 -o labels/ --model run:1a2b3c4d",
    ],
    "sweep": ["ecgvgg sweep pipelines/adasyn_vgg.yaml --grid resampling.sampler=adasyn,smote,none"],
    "tune": ["ecgvgg tune pipelines/adasyn_vgg.yaml --space pipelines/tune_space.yaml --trials 20"],
    "runs": ["ecgvgg runs", "ecgvgg runs --out runs.csv"],
}
#: Placeholders by parameter name; other parameters are named by their type (N, NUMBER, PATH) or in capitals.
METAVARS = {
    "set_": "KEY=VALUE",
    "grid": "KEY=V1,V2,...",
    "run_id": "RUN_ID",
    "tracking_uri": "URI",
    "bandpass": "LOW,HIGH",
    "leads": "LEAD,LEAD",
    "rows": "ROWS",
    "resume": "RUN_ID",
    "fmt": "FORMAT",
    "label_column": "COLUMN",
    "group_column": "COLUMN",
    "data": "TABLE",
    "records_dir": "FOLDER",
    "inputs": "RECORDING",
    "reference": "EXT",
    "fs": "HZ",
    "model": "MODEL",
}


def polish_help(app: typer.Typer) -> None:
    """Give every command a one-line summary and examples, and every parameter a readable placeholder."""
    import inspect
    import typing

    for info in app.registered_commands:
        if info.callback is None:
            continue
        name = info.name or info.callback.__name__.replace("_", "-")
        info.short_help = info.short_help or SUMMARIES.get(name)
        if name in EXAMPLES and not info.epilog:
            info.epilog = "Examples:\n\n" + "\n\n".join(f"  {e}" for e in EXAMPLES[name])
        hints = typing.get_type_hints(info.callback, include_extras=True)
        for pname in inspect.signature(info.callback).parameters:
            hint = hints.get(pname)
            extras = getattr(hint, "__metadata__", ())
            kind = typing.get_args(hint)[0] if extras else hint
            kind = (
                next((a for a in typing.get_args(kind) if a is not type(None)), kind)
                if typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", ()))
                else kind
            )
            if kind is bool or kind is None:
                continue
            for param in extras:
                if isinstance(param, typer.models.ArgumentInfo) and param.metavar is None:
                    param.metavar = METAVARS.get(pname, pname.upper())
                elif hasattr(param, "metavar") and param.metavar is None:
                    param.metavar = METAVARS.get(pname) or {int: "N", float: "NUMBER", Path: "PATH"}.get(
                        typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind, pname.upper()
                    )
        # the evaluated hints, whose parameter objects now carry the placeholders, are what Typer reads
        info.callback.__annotations__ = hints

"""A whole study in one MLflow run: load -> split -> oversample -> reshape -> train -> score -> log."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgvgg.config import PipelineConfig, set_path, validate_config
from ecgvgg.data import load_xy
from ecgvgg.errors import ConfigError
from ecgvgg.resampling import Splits, split_then_oversample
from ecgvgg.shapes import input_shape, reshape

log = logging.getLogger("ecgvgg")


@dataclass
class RunResult:
    """What ``ecgvgg run`` reports: the run, the test scores and the collapse verdict."""

    run_id: str
    test_scores: dict[str, Any]
    val_scores: dict[str, Any]
    class_names: list[str]
    collapsed: bool
    collapse_reason: str | None
    model_uri: str
    model_path: Path
    epochs_run: int


def load_data(cfg: PipelineConfig) -> tuple[pd.DataFrame, pd.Series, pd.Series | None]:
    """Load and validate the configured table(s)."""
    d = cfg.data
    header = None if d.header == "auto" else d.header
    y_path = d.resolved_path("y_path") if d.y_path else None
    return load_xy(d.resolved_path(), y_path, label_column=d.label_column, group_column=d.group_column,
                   header=header, classes=range(len(d.class_names)), format=d.format)


def prepare_splits(cfg: PipelineConfig, X: pd.DataFrame, y: pd.Series, groups: pd.Series | None) -> Splits:
    """Split then oversample as configured (grouped when a group column is set and ``split.grouped``)."""
    protocol = {}
    if cfg.split.protocol == "de_chazal":
        from ecgvgg.records import DS1, DS2

        if groups is None:
            raise ConfigError("split.protocol: de_chazal needs data.group_column naming the record column")
        protocol = {"test_groups": DS2, "train_groups": DS1}
    return split_then_oversample(
        X, y, groups=groups if cfg.split.grouped or protocol else None, test_size=cfg.split.test_size,
        val_size=cfg.split.val_size, sampler=cfg.resampling.sampler, sampler_params=cfg.resampling.params,
        seed=cfg.split.seed, classes=range(len(cfg.data.class_names)), **protocol,
    )


def build_model(cfg: PipelineConfig, length: int) -> Any:
    """The configured VGG16 for beats of ``length`` samples."""
    from ecgvgg.models import vgg16_1d, vgg16_2d

    shape = input_shape(length, cfg.input.kind, cfg.input.method, cfg.input.size)
    builder = vgg16_1d if cfg.input.kind == "1d" else vgg16_2d
    m = cfg.model
    return builder(shape, len(cfg.data.class_names), width=m.width, dense_units=m.dense_units, dropout=m.dropout,
                   batch_norm=m.batch_norm, weights=m.weights)


def train(cfg: PipelineConfig, model: Any, shaped: Splits, **extra: Any) -> Any:
    """:func:`ecgvgg.training.fit` with the ``training`` section of ``cfg`` (``extra`` adds or overrides)."""
    from ecgvgg.training import fit

    t = cfg.training
    kwargs = dict(epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate,
                  class_weight=t.class_weight, class_names=list(cfg.data.class_names), monitor=t.monitor,
                  early_stopping_patience=t.early_stopping_patience or None,
                  reduce_lr_patience=t.reduce_lr_patience or None, collapse_patience=t.collapse_patience,
                  collapse_dominance=t.collapse_dominance, stop_on_collapse=t.stop_on_collapse, seed=t.seed,
                  augment_scale=t.augment_scale, augment_noise=t.augment_noise)
    return fit(model, shaped, **{**kwargs, **extra})


def run_pipeline(
    cfg: PipelineConfig,
    *,
    callbacks: Sequence[Any] = (),
    on_epoch: Callable[[int, Mapping[str, float]], None] | None = None,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> RunResult:
    """Run the configured study as one MLflow run and return its result.

    Data and config problems are found before the run starts, so they leave no run behind;
    anything that fails later ends the run as FAILED (KILLED on Ctrl-C or SIGTERM).
    ``resume_run_id`` continues an interrupted run from its best checkpoint, in the same run.
    """
    import mlflow
    from sklearn.metrics import classification_report

    from ecgvgg import tracking
    from ecgvgg.inference import METADATA_FILE, metadata
    from ecgvgg.metrics import collapse_reason, confusion, per_class_scores
    from ecgvgg.training import setup_device

    names = list(cfg.data.class_names)
    classes = list(range(len(names)))
    X, y, groups = load_data(cfg)
    if cfg.data.group_column and not cfg.split.grouped:
        log.warning("split.grouped is false: beats of one %s may land in both training and test", cfg.data.group_column)
    splits = prepare_splits(cfg, X, y, groups)
    length = X.shape[1]
    shaped = splits.map_x(lambda a: reshape(a, cfg.input.kind, cfg.input.method, cfg.input.size))
    del X

    uri = cfg.tracking.resolved_uri()
    experiment_id = tracking.configure(uri, cfg.tracking.experiment)
    resume = tracking.resume_point(uri, resume_run_id, cfg.flat(), cfg.training.monitor) if resume_run_id else None
    with tracking.start_run(experiment_id, None if resume_run_id else cfg.tracking.run_name, run_id=resume_run_id,
                            nested=parent_run_id is not None) as run:
        run_id = run.info.run_id
        log.info("MLflow run %s %s", run_id, "resumed" if resume else "started")
        run_dir = tracking.local_run_dir(uri, run_id)
        if resume is None:
            mlflow.set_tags({"sampler": cfg.resampling.sampler, "model": f"vgg16_{cfg.input.kind}",
                             "input": cfg.input.kind if cfg.input.kind == "1d" else f"2d-{cfg.input.method}",
                             "collapsed": "unknown"})
            tracking.log_params(cfg.flat())
            tracking.log_counts(splits.counts, names)

        strategy = setup_device(mixed_precision=cfg.training.mixed_precision,
                                deterministic=cfg.training.deterministic, seed=cfg.training.seed)
        with strategy.scope():
            model = build_model(cfg, length) if resume is None else tracking.load_checkpoint(resume.checkpoint)
        t = cfg.training

        def epoch_hook(epoch: int, logs: Mapping[str, float]) -> None:
            tracking.log_epoch(epoch, logs)
            if on_epoch is not None:
                on_epoch(epoch, logs)

        result = train(cfg, model, shaped, checkpoint_path=run_dir / "best.keras", on_epoch=epoch_hook,
                       callbacks=callbacks, compile_model=resume is None,
                       initial_epoch=resume.epoch if resume else 0, initial_best=resume.best if resume else None)
        if result.class_weight:
            mlflow.log_params({f"class_weight_{names[c]}": round(w, 6) for c, w in result.class_weight.items()})
        mlflow.log_metrics({"epochs_run": result.epochs_run, "best_epoch": result.best_epoch or 0})

        probs = model.predict(shaped.X_test, batch_size=t.batch_size, verbose=0)
        pred = np.asarray(classes)[np.argmax(probs, axis=1)]
        scores = per_class_scores(shaped.y_test, pred, classes)
        matrix = confusion(shaped.y_test, pred, classes)
        report = classification_report(shaped.y_test, pred, labels=classes, target_names=names, digits=3,
                                       zero_division=0)
        tracking.log_evaluation(scores, matrix, report, names, prefix="test")
        reason = result.collapse_reason or collapse_reason(shaped.y_test, pred, classes, names,
                                                          dominance=t.collapse_dominance, check_recall=False)
        if reason and not result.collapse_reason:
            reason = f"on the test split: {reason}"
        mlflow.set_tags({"collapsed": "true" if reason else "false", "collapse_reason": reason or ""})

        meta = metadata(classes, names, cfg.input.model_dump(), length)
        model_path = run_dir / "model.keras"
        model.save(model_path)
        (run_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        model_uri = tracking.log_model(model, shaped.X_test[:8], meta)
    scores["confusion_matrix"] = matrix.tolist()
    return RunResult(run_id, scores, result.val_scores, names, reason is not None, reason, model_uri, model_path,
                     result.epochs_run)


def grid_configs(cfg: PipelineConfig, grid: Mapping[str, Sequence[Any]]) -> list[tuple[dict[str, Any], PipelineConfig]]:
    """Every combination of ``grid`` (``key.path`` -> values) applied to ``cfg``, validated."""
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        raw = cfg.model_dump(mode="json")
        for key, value in zip(keys, values):
            set_path(raw, key, value, option="--grid")
        combo = dict(zip(keys, values))
        out.append((combo, validate_config(raw, source="--grid " + ", ".join(f"{k}={v}" for k, v in combo.items()))))
    return out

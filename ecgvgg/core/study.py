"""The study loop: train and score one fold, run K folds and pool them. Imports no MLflow, rich or Optuna.

:func:`run_fold` takes a config, the data and one planned fold and returns a trained, scored
:class:`FoldResult`; :func:`run_study` runs every planned fold (one for a single split) and
pools them (:class:`StudyResult`: out-of-fold scores and a fold ensemble for cross-validation).
Observers (:class:`Observer`: MLflow logging, the terminal, a tuner's pruner) hear about the
study as it goes; an observer's answer to ``epoch_ended`` or ``fold_ended`` can stop it.
"""

from __future__ import annotations

import logging
import time
from functools import reduce
from operator import add
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgvgg.core.config import PipelineConfig
from ecgvgg.core.contract import contract_for
from ecgvgg.core.dataset import StudyData, grouping, split_kind
from ecgvgg.core.folds import Fold, materialise
from ecgvgg.core.metrics import (
    bootstrap_macro_f1,
    bootstrap_from_confusions,
    class_positions,
    confusion,
    group_confusions,
    group_keys,
    held_out_verdict,
    macro_f1_from_confusion,
    per_class_scores,
    scores_from_confusion,
)
from ecgvgg.core.events import Observer
from ecgvgg.core.results import FoldResult, ResumePoint, StudyResult, macro_f1
from ecgvgg.core.resampling import Splits, balanced_proportions

log = logging.getLogger("ecgvgg")


def run_study(
    cfg: PipelineConfig,
    data: StudyData,
    folds: Sequence[Fold],
    observers: Sequence[Observer] = (),
    *,
    source: Path | None = None,
    resume: ResumePoint | None = None,
) -> StudyResult:
    """Run every planned fold and pool them; a single split is one fold.

    ``source`` is the local ``.keras`` file of a ``model.weights: run:ID`` network; ``resume``
    (a :class:`ecgvgg.core.training.ResumePoint`) continues a single split's interrupted training.
    """
    if split_kind(cfg) == "ungrouped beats":
        log.warning(
            "the split is by beat: beats of one recording can sit in both training and test, so the "
            "score is optimistic; set data.group_column (record, patient or segment) to split by group"
        )
    started = time.perf_counter()
    for o in observers:
        o.study_started(cfg, data, folds)
    results: list[FoldResult] = []
    stop = None
    for k, fold in enumerate(folds, start=1):
        if len(folds) > 1:
            log.info(
                "fold %d of %d: %d training, %d validation, %d test rows",
                k,
                len(folds),
                len(fold.train),
                len(fold.val),
                len(fold.test),
            )
        out = run_fold(cfg, data, fold, observers, number=k, source=source, resume=resume)
        results.append(out)
        answers = [o.fold_ended(k, out) for o in observers]  # every observer hears every fold
        stop = out.pruned or next((a for a in answers if a), None)
        if stop:
            break
    result = _pool(cfg, data, folds, results) if len(folds) > 1 and not stop else _single(cfg, results[-1])
    result.pruned, result.seconds = stop, time.perf_counter() - started
    for o in observers:
        o.study_ended(result)
    return result


def run_fold(
    cfg: PipelineConfig,
    data: StudyData,
    fold: Fold,
    observers: Sequence[Observer] = (),
    *,
    number: int = 1,
    source: Path | None = None,
    resume: ResumePoint | None = None,
) -> FoldResult:
    """Oversample this fold's training part, train, then score validation, test, the baseline and the verdict."""
    from ecgvgg.core.shapes import reshape
    from ecgvgg.core.training import setup_device

    splits = materialise(cfg, data.X, data.y, fold)
    if cfg.training.class_weight == "records":
        from ecgvgg.core.class_weights import effective_records

        assert data.groups is not None  # the config check asks for data.group_column
        splits.records = effective_records(data.y[fold.train], data.groups[fold.train], cfg.data.classes)
    if cfg.training.subject_adversary:
        assert data.groups is not None  # the config check asks for data.group_column
        codes = np.unique(data.groups[fold.train], return_inverse=True)[1].astype(np.int32)
        splits.train_groups = np.r_[codes, np.full(len(splits.y_train) - len(codes), -1, dtype=np.int32)]  # synthetic: -1
    folder = next((f for o in observers if (f := o.fold_started(number, cfg, data, splits)) is not None), None)
    shaped = splits.map_x(lambda a: reshape(a, cfg.input.kind, cfg.input.method, cfg.input.size))
    t = cfg.training
    strategy = setup_device(mixed_precision=t.mixed_precision, deterministic=t.deterministic, seed=t.seed)
    with strategy.scope():  # the model, and the optimizer that compiling it makes, belong to the strategy
        model = (
            build_model(cfg, data.X.shape[1], _rhythm_rows(cfg, data, fold.train), source)
            if resume is None
            else _load_checkpoint(resume.checkpoint)
        )
        started = time.perf_counter()
        fit, unfrozen = _train(cfg, model, shaped, observers, folder / "best.keras" if folder else None, resume)
    seen = None if grouping(cfg, data) is None else data.distinct_groups(fold.train, fold.val)
    sample = _sample_rows(data, fold.train, cfg.training.seed)
    contract = contract_for(cfg, data.features, seen, rows=sample, made=_made(cfg))
    if cfg.record_adaptation:  # the statistics a record is compared with: training rows in their own proportions
        from ecgvgg.core.adaptation import reference_statistics

        assert sample is not None  # the config check refuses record_adaptation with data.stream
        contract = contract.with_adaptation(cfg.record_adaptation, reference_statistics(model, contract.shape(sample)))
    out = FoldResult(
        fold,
        splits.counts,
        model,
        fit,
        contract,
        seconds=time.perf_counter() - started,
        first_epoch=(resume.epoch if resume else 0) + 1,
        unfrozen_at=unfrozen,
        y_val=shaped.y_val,
        y_test=shaped.y_test,
    )
    if out.pruned:
        return out
    return _score(cfg, data, out, shaped)


def _score(cfg: PipelineConfig, data: StudyData, out: FoldResult, shaped: Splits) -> FoldResult:
    """Test predictions and scores, their bootstrap interval, the baseline and the verdict on all held-out rows.

    Streamed test rows are predicted chunk by chunk into per-group confusion matrices, and the
    test probabilities are not kept.
    """
    t, names, classes = cfg.training, list(cfg.data.class_names), cfg.data.classes
    groups = grouping(cfg, data)
    test_groups = None if groups is None else groups[shaped.test_index]
    forest = fit_baseline(cfg, data, out.fold.train)
    if data.streamed:
        test_rows: Any = shaped.X_test  # a lazy stream.Rows view: its transform reshapes each chunk
        per_group, base = _streamed_confusions(
            out.model, forest, data.X[shaped.test_index], test_rows.transform, shaped.y_test, test_groups, classes, t.batch_size
        )
        out.baseline_score = None if base is None else float(macro_f1_from_confusion(base))
    else:
        records = data.groups[shaped.test_index] if out.contract.adaptation and data.groups is not None else None
        out.probs = out.contract.network_probabilities(out.model, shaped.X_test, records, t.batch_size)
        raw = None if forest is None else data.X[shaped.test_index]
        if cfg.baseline_blend:  # the model is the network and the baseline: the run scores it as it is saved
            from ecgvgg.core.baselines import blended

            assert raw is not None  # the config check asks a blend for a baseline
            out.baseline = forest
            out.probs = blended(out.probs, forest, raw, classes, cfg.baseline_blend)
        if cfg.record_consensus:  # as the saved model answers when it is given the records
            assert data.groups is not None  # the config check asks for data.group_column
            test_rows = data.X[shaped.test_index]
            out.probs = out.contract.with_consensus(out.probs, test_rows, data.groups[shaped.test_index])
        out.pred = np.asarray(classes)[np.argmax(out.probs, axis=1)]
        keys = np.arange(len(out.pred)) if test_groups is None else test_groups
        per_group = group_confusions(shaped.y_test, out.pred, classes, keys)
        out.baseline_pred = None if forest is None else forest.predict(raw)
    matrix = per_group.sum(axis=0)
    out.scores = scores_from_confusion(matrix, classes)
    out.scores["confusion_matrix"] = matrix.tolist()
    out.ci = bootstrap_from_confusions(per_group, by_beat=data.streamed and test_groups is None, seed=cfg.split.seed)
    held_out = {"validation": (shaped.y_val, out.val_pred), "test": matrix}
    out.reason, out.missed = held_out_verdict(
        held_out, classes, names, dominance=t.collapse_dominance, min_rows=t.collapse_min_rows
    )
    if out.reason is None and out.fit.stopped_on_collapse:
        out.reason, out.missed = out.fit.collapse_reason, {}
    if cfg.tracking.gradcam_per_class:
        out.saliency = _saliency(cfg, data, out)
    return out


def _streamed_confusions(
    model: Any,
    forest: Any,
    rows: Any,
    shape: Any,
    y: np.ndarray,
    groups: np.ndarray | None,
    classes: Sequence[int],
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-group confusion matrices of ``model`` (and the pooled one of ``forest``) on streamed rows, chunk by chunk."""
    import tensorflow as tf

    k = len(classes)
    keys = np.zeros(len(y), dtype=np.int64) if groups is None else group_keys(groups)
    per_group = np.zeros((int(keys.max()) + 1 if len(keys) else 1, k, k), dtype=np.int64)
    base = np.zeros((k, k), dtype=np.int64) if forest is not None else None
    truth = class_positions(y, classes)
    # a plain call: each worker of a cluster predicts its own copy of the rows, with no collective
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for x, positions in rows.chunks(batch_size):
        at = np.searchsorted(rows.positions, positions)  # rows.positions are sorted: y is in their order
        pred = np.argmax(np.asarray(forward(tf.constant(shape(x) if shape else x))), axis=1)
        np.add.at(per_group, (keys[at], truth[at], pred), 1)
        if base is not None:
            np.add.at(base, (truth[at], class_positions(forest.predict(x), classes)), 1)
    return per_group, base


def _saliency(cfg: PipelineConfig, data: StudyData, out: FoldResult) -> Any:
    """Grad-CAM of up to ``tracking.gradcam_per_class`` test beats per predicted class, summed by class.

    Streamed test rows are drawn at random (four times the beats asked for, per class), read and
    predicted first, since their predictions are not kept.
    """
    from ecgvgg.core.explain import ClassSaliency, gradcam, pick_rows

    test, per_class = out.fold.test, cfg.tracking.gradcam_per_class
    if out.probs is None:
        rng = np.random.default_rng(cfg.split.seed)
        test = np.sort(rng.choice(test, min(len(test), 4 * per_class * len(cfg.data.classes)), replace=False))
        probs = out.model.predict(out.contract.shape(data.rows(test)), batch_size=cfg.training.batch_size, verbose=0)
    else:
        probs = out.probs
    predicted = np.argmax(probs, axis=1)
    rows = pick_rows(predicted, per_class, cfg.split.seed)
    beats = data.rows(test[rows])
    explained = gradcam(out.model, beats, out.contract, class_index=predicted[rows], batch_size=cfg.training.batch_size)
    return ClassSaliency.of(beats, explained, cfg.data.class_names)


def _train(
    cfg: PipelineConfig, model: Any, shaped: Splits, observers: Sequence[Observer], checkpoint: Path | None, resume: Any
) -> tuple[Any, int | None]:
    """Fit as ``training`` says (in two phases with ``unfreeze_after``); return the fit and the unfreezing epoch."""
    from ecgvgg.core.training import fit

    t = cfg.training

    def on_epoch(epoch: int, logs: Mapping[str, float]) -> str | None:
        return next((r for o in observers if (r := o.epoch_ended(epoch, logs))), None)

    r = cfg.resampling
    proportions = balanced_proportions(shaped.y_train, r.params) if r.sampler == "balanced" else None
    common = dict(
        class_names=list(cfg.data.class_names),
        max_per_class=r.max_per_class,
        proportions=proportions,
        augment=augment_spec(cfg),
        checkpoint_path=checkpoint,
        on_epoch=on_epoch,
        callbacks=[c for o in observers for c in o.keras_callbacks()],
    )
    phased = t.unfreeze_after is not None and resume is None
    # the prior shift applies once, to the model returned at the end
    first = fit(
        model,
        shaped,
        t.model_copy(update={"epochs": t.unfreeze_after, "prior_shift": 0.0}) if phased else t,
        compile_model=resume is None,
        initial_epoch=resume.epoch if resume else 0,
        initial_best=resume.best if resume else None,
        initial_best_epoch=resume.best_epoch if resume else None,
        **common,
    )
    if not phased or t.unfreeze_after is None or first.epochs_run < t.unfreeze_after or first.stopped_by:
        return first, None
    rate = t.fine_tune_learning_rate or t.learning_rate / 10  # phase two: everything trains, at a lower rate
    for layer in model.layers:
        layer.trainable = True
    scores = first.history.get(t.monitor, [])
    best = (min(scores) if t.monitor.endswith("loss") else max(scores)) if scores else None
    log.info("epoch %d: all blocks unfrozen; fine-tuning at learning rate %g", first.epochs_run, rate)
    second = fit(
        model,
        shaped,
        t.model_copy(update={"learning_rate": rate}),
        initial_epoch=first.epochs_run,
        initial_best=best,
        initial_best_epoch=first.best_epoch,
        **common,
    )
    second.history = {k: first.history.get(k, []) + second.history.get(k, []) for k in {*first.history, *second.history}}
    second.epochs_run += first.epochs_run
    return second, first.epochs_run


def _single(cfg: PipelineConfig, fold: FoldResult) -> StudyResult:
    """A single split's study: its one fold's test scores."""
    return StudyResult(
        cfg,
        [fold],
        fold.scores,
        fold.ci,
        fold.reason,
        fold.missed,
        fold.baseline_macro_f1,
        split_kind(cfg),
        saliency=fold.saliency,
    )


def _pool(cfg: PipelineConfig, data: StudyData, folds: Sequence[Fold], results: Sequence[FoldResult]) -> StudyResult:
    """Out-of-fold scores over all folds' test rows, their interval, the verdict and the fold ensemble."""
    from ecgvgg.core.models import fold_ensemble

    names, n = list(cfg.data.class_names), data.scored  # extra training tables are never scored
    classes = cfg.data.classes
    fold_of, probs = np.zeros(n, dtype=np.int64), np.zeros((n, len(classes)), dtype=np.float32)
    baseline = np.zeros(n, dtype=np.int64) if cfg.baseline_kind != "none" else None
    for k, (fold, out) in enumerate(zip(folds, results), start=1):
        fold_of[fold.test], probs[fold.test] = k, out.probs
        if baseline is not None:
            baseline[fold.test] = out.baseline_pred  # type: ignore[assignment]
    y = data.y[:n]
    groups = None if grouping(cfg, data) is None else data.named_groups(np.arange(n))
    pred = np.asarray(classes)[np.argmax(probs, axis=1)]
    scores = per_class_scores(y, pred, classes)
    scores["confusion_matrix"] = confusion(y, pred, classes).tolist()
    reason, missed = held_out_verdict(
        {"out-of-fold": (y, pred)},
        classes,
        names,
        dominance=cfg.training.collapse_dominance,
        min_rows=cfg.training.collapse_min_rows,
    )
    oof = {"label": y, "prediction": pred, "probs": probs, "fold": fold_of, "groups": groups}
    return StudyResult(
        cfg,
        list(results),
        scores,
        bootstrap_macro_f1(y, pred, classes, groups, seed=cfg.split.seed),
        reason,
        missed,
        macro_f1(y, baseline, len(classes)),
        split_kind(cfg),
        cv_summary([r.scores for r in results], names),
        oof,
        fold_ensemble([r.model for r in results]),
        contract_for(
            cfg,
            data.features,
            groups,
            ensemble=True,
            rows=_sample_rows(data, np.arange(len(data.y)), cfg.training.seed),
            made=_made(cfg),
        ),
        saliency=None if results[0].saliency is None else reduce(add, (r.saliency for r in results)),
    )


def cv_summary(fold_scores: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Mean and standard deviation over folds of macro-F1 and per-class precision, recall and F1.

    A class's mean is over the folds whose test part has rows of it.
    """
    f1s = np.array([s["macro_f1"] for s in fold_scores])
    out: dict[str, Any] = {"folds": len(fold_scores), "macro_f1": (float(f1s.mean()), float(f1s.std(ddof=1)))}
    metrics = {"cv_macro_f1_mean": out["macro_f1"][0], "cv_macro_f1_std": out["macro_f1"][1]}
    for metric in ("precision", "recall", "f1"):
        out[metric] = {}
        for c, name in enumerate(names):
            values = np.array([s[metric][c] for s in fold_scores if s["support"][c] > 0])
            if not len(values):
                continue
            mean, sd = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[metric][name] = (mean, sd)
            metrics[f"cv_{metric}_{name}_mean"], metrics[f"cv_{metric}_{name}_std"] = mean, sd
    out["metrics"] = metrics
    return out


def build_model(cfg: PipelineConfig, width: int, rhythm: np.ndarray | None = None, source: Path | None = None) -> Any:
    """The configured VGG16 for rows of ``width`` values: new, from a weights file, or from ``source`` (a
    run's network, with a new head if asked), with ``model.frozen_blocks`` frozen.

    With ``data.rhythm_columns`` the last of those values feed the rhythm branch, standardised
    with the mean and variance of ``rhythm`` (the training rows' rhythm columns).
    """
    from ecgvgg.core.models import freeze_blocks, vgg16, with_new_head
    from ecgvgg.core.shapes import input_shape

    m = cfg.model
    if source is not None:
        from ecgvgg.core.inference import load_model

        model = load_model(source).model
        if m.new_head:
            model = with_new_head(model, len(cfg.data.class_names))
    else:
        n_rhythm = len(cfg.data.rhythm_columns)
        shape = input_shape(width - n_rhythm, cfg.input.kind, cfg.input.method, cfg.input.size)
        stats: dict[str, Any] = {"channels": max(1, len(cfg.data.channels)), "references": cfg.data.references}
        if n_rhythm:
            r = np.zeros((1, n_rhythm), np.float32) if rhythm is None else np.asarray(rhythm, np.float64)
            stats.update(
                rhythm=n_rhythm, rhythm_mean=r.mean(axis=0).tolist(), rhythm_variance=np.maximum(r.var(axis=0), 1e-12).tolist()
            )
            shape = (shape[0] + n_rhythm, 1)
        model = vgg16(
            shape,
            len(cfg.data.class_names),
            width=m.width,
            dense_units=m.dense_units,
            dropout=m.dropout,
            batch_norm=m.batch_norm,
            weights=m.weights,
            **stats,
        )
    return freeze_blocks(model, m.frozen_blocks) if m.frozen_blocks else model


def augment_spec(cfg: PipelineConfig) -> Any:
    """The :class:`ecgvgg.core.augment.Augment` that the ``training`` section describes."""
    from ecgvgg.core.augment import Augment

    t = cfg.training
    time_axis = cfg.input.kind == "1d"  # shift, stretch and wander act on (samples, 1) beats
    return Augment(
        scale=t.augment_scale,
        noise=t.augment_noise,
        shift=t.augment_shift if time_axis else 0,
        stretch=t.augment_stretch if time_axis else 0.0,
        wander=t.augment_wander if time_axis else 0.0,
        mixup=t.mixup,
        rhythm=len(cfg.data.rhythm_columns),
        channels=max(1, len(cfg.data.channels)),
    )


def _rhythm_rows(cfg: PipelineConfig, data: StudyData, train: np.ndarray) -> np.ndarray | None:
    """The rhythm columns of the (real, not oversampled) training rows, or None without a rhythm branch."""
    return data.rows(train, list(cfg.data.rhythm_columns)) if cfg.data.rhythm_columns else None


#: Training rows whose column statistics a model's input contract keeps.
CONTRACT_SAMPLE_ROWS = 5000


def _made(cfg: PipelineConfig) -> dict[str, Any] | None:
    """How ``ecgvgg prepare`` made the training table, when it says (its Parquet metadata)."""
    from ecgvgg.core.records import prepare_options_of

    return None if cfg.data.stream else prepare_options_of(cfg.data.resolved_path())


def _sample_rows(data: StudyData, train: np.ndarray, seed: int) -> np.ndarray | None:
    """At most :data:`CONTRACT_SAMPLE_ROWS` real training rows, drawn at random (None for streamed data)."""
    if data.streamed:
        return None
    rng = np.random.default_rng(seed)
    pick = train if len(train) <= CONTRACT_SAMPLE_ROWS else rng.choice(train, CONTRACT_SAMPLE_ROWS, replace=False)
    return data.rows(np.sort(pick))


#: Training rows of each class that a random-forest baseline of streamed data is fitted on.
STREAMED_BASELINE_ROWS = 5000


def fit_baseline(cfg: PipelineConfig, data: StudyData, train: np.ndarray) -> Any:
    """The configured baseline (``cfg.baseline_kind``) fitted on the ``train`` rows before oversampling, or
    None: at most ``resampling.max_per_class`` of each class (one draw, as one epoch sees; for streamed
    data :data:`STREAMED_BASELINE_ROWS`); with ``baseline_class_weight: training`` the boosted tree weighs the
    classes as ``training.class_weight`` and ``training.max_class_weight`` weigh them for the network."""
    kind = cfg.baseline_kind
    if kind == "none":
        return None
    from ecgvgg.core.baselines import baseline_model
    from ecgvgg.core.class_weights import rows_class_weight
    from ecgvgg.core.resampling import cap_per_class

    cap = STREAMED_BASELINE_ROWS if data.streamed else cfg.resampling.max_per_class
    rows = cap_per_class(train, data.y, cap, np.random.default_rng(cfg.training.seed))
    t, weights = cfg.training, None
    if cfg.baseline_class_weight == "training":
        groups = None if data.groups is None else data.groups[rows]
        weights = rows_class_weight(t.class_weight, data.y[rows], groups, cfg.data.classes, t.max_class_weight)
    return baseline_model(
        kind,
        data.rows(rows),
        data.y[rows],
        seed=t.seed,
        channels=max(1, len(cfg.data.channels)),
        references=cfg.data.references,
        rhythm=cfg.data.rhythm_columns,
        class_weight=weights,
    )


def _load_checkpoint(path: Path) -> Any:
    """Load a ``.keras`` checkpoint with its optimizer state (to resume training)."""
    import keras

    return keras.saving.load_model(path)

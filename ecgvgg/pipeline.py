"""A whole study in one MLflow run: load -> split -> oversample -> reshape -> train -> score -> log."""

from __future__ import annotations

import itertools
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgvgg.config import RUN_PREFIX, PipelineConfig, ResamplingConfig, data_path, set_path, validate_config
from ecgvgg.data import load_xy
from ecgvgg.errors import ConfigError
from ecgvgg.resampling import Splits, cv_folds, split_then_oversample
from ecgvgg.shapes import input_shape, reshape

log = logging.getLogger("ecgvgg")


@dataclass
class RunResult:
    """What ``ecgvgg run`` reports: the run, the test scores and the verdict.

    For a cross-validated run ``test_scores`` are the pooled out-of-fold scores and ``cv`` holds
    the per-fold mean and standard deviation.
    """

    run_id: str
    test_scores: dict[str, Any]
    val_scores: dict[str, Any]
    class_names: list[str]
    collapsed: bool
    collapse_reason: str | None
    model_uri: str
    model_path: Path
    epochs_run: int
    missed: dict[str, str] = field(default_factory=dict)
    ci: tuple[float, float] | None = None
    baseline_macro_f1: float | None = None
    split_kind: str = ""
    cv: dict[str, Any] | None = None
    best_epoch: int | None = None
    run_name: str = ""


def split_kind(cfg: PipelineConfig) -> str:
    """Which protocol produced the test scores, in words (logged as the ``split_kind`` tag)."""
    if cfg.split.protocol == "de_chazal":
        return "inter-patient (de Chazal DS1/DS2)"
    if cfg.data.group_column and cfg.split.grouped:
        return f"grouped by {cfg.data.group_column}"
    return "ungrouped beats"


def load_data(cfg: PipelineConfig) -> tuple[pd.DataFrame, pd.Series, pd.Series | None]:
    """Load and validate the configured table(s).

    The rows of ``data.extra_train`` tables come last; their number is ``X.attrs["train_only"]``.
    """
    d = cfg.data
    header = None if d.header == "auto" else d.header
    y_path = d.resolved_path("y_path") if d.y_path else None
    options = dict(label_column=d.label_column, group_column=d.group_column, header=header,
                   classes=range(len(d.class_names)), format=d.format, rhythm_columns=d.rhythm_columns,
                   ignore_columns=d.ignore_columns)
    X, y, groups = load_xy(d.resolved_path(), y_path, **options)
    extras = [_extra_table(path, options) for path in d.extra_train]
    for path, (Xe, _, _) in zip(d.extra_train, extras):
        if list(map(str, Xe.columns)) != list(map(str, X.columns)):
            from ecgvgg.errors import DataError

            raise DataError(f"{path}: data.extra_train table has columns {list(Xe.columns)[:3]}... ({Xe.shape[1]}), "
                            f"{d.path} has {list(X.columns)[:3]}... ({X.shape[1]}); make both the same way")
    if extras:
        X = pd.concat([X, *(e[0].set_axis(X.columns, axis=1) for e in extras)], ignore_index=True)
        y = pd.concat([y, *(e[1] for e in extras)], ignore_index=True)
        if groups is not None:
            groups = pd.concat([groups.astype(str), *(e[2].astype(str) for e in extras)], ignore_index=True)
    X.attrs["train_only"] = sum(len(e[1]) for e in extras)
    return X, y, groups


def _extra_table(path: str, options: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.Series, pd.Series | None]:
    """One ``data.extra_train`` table, read like ``data.path``; its errors name the key."""
    from ecgvgg.errors import DataError

    try:
        return load_xy(data_path(path), **options)
    except DataError as exc:
        raise DataError(f"data.extra_train: {exc}") from None


def beat_length(cfg: PipelineConfig, X: pd.DataFrame | np.ndarray) -> int:
    """Samples per beat: the table's columns less the rhythm columns."""
    return X.shape[1] - len(cfg.data.rhythm_columns)


def check_data(cfg: PipelineConfig, data: tuple[pd.DataFrame, pd.Series, pd.Series | None] | None = None,
               ) -> tuple[pd.DataFrame, pd.Series, pd.Series | None]:
    """Load the data (unless given) and check every setting that depends on it, before any run exists.

    Raises DataError or ConfigError naming the file or the YAML key: a configured class with no
    rows, an ``input.size`` that does not fit the beats, a split or cross-validation that the
    classes and groups cannot fill. Needs neither TensorFlow nor MLflow.
    """
    from ecgvgg.errors import DataError
    from ecgvgg.shapes import fold_side

    X, y, groups = data if data is not None else load_data(cfg)
    names = list(cfg.data.class_names)
    counts = np.bincount(y.to_numpy(), minlength=len(names))
    empty = [f"{n} ({c})" for c, n in enumerate(names) if counts[c] == 0]
    if empty:
        raise DataError(f"{cfg.data.resolved_path()}: data.class_names has class(es) {', '.join(empty)} with no rows; "
                        "drop them from data.class_names and relabel, or add rows")
    length, i = beat_length(cfg, X), cfg.input
    if cfg.model.weights and cfg.model.weights.startswith(RUN_PREFIX):
        check_source_run(cfg, X.shape[1])
    if i.kind == "2d" and i.method == "fold" and i.size is not None and i.size < fold_side(length):
        raise ConfigError(f"input.size: {i.size} is too small to fold {length} samples (need at least "
                          f"{fold_side(length)}, or leave it unset)")
    if i.kind == "2d" and i.method == "gaf" and i.size is not None and not 2 <= i.size <= length:
        raise ConfigError(f"input.size: {i.size} does not fit a Gramian angular field of {length}-sample beats "
                          f"(choose 2 to {length})")
    if cfg.input.kind != "1d" and cfg.time_axis_augmentation():
        warnings.warn(f"{', '.join(cfg.time_axis_augmentation())} act on 1D beats only: not applied to "
                      f"input.kind {cfg.input.kind} (set them to 0 to silence this)", stacklevel=2)
    if cfg.training.augment_shift >= length // 2:
        raise ConfigError(f"training.augment_shift: {cfg.training.augment_shift} samples is half or more of a "
                          f"{length}-sample beat (use a few samples)")
    strategy = cfg.resampling.params.get("sampling_strategy")
    if strategy is not None and cfg.resampling.sampler != "none":
        from imblearn.utils import check_sampling_strategy

        try:
            check_sampling_strategy(strategy, y.to_numpy(), "over-sampling")
        except ValueError as exc:
            raise ConfigError(f"resampling.params.sampling_strategy: {strategy!r} does not fit the data "
                              f"({str(exc).splitlines()[0]})") from None
    if cfg.split.folds:
        grouped = groups if cfg.split.grouped else None
        cv_folds(y, folds=cfg.split.folds, groups=grouped, val_size=cfg.split.val_size, seed=cfg.split.seed,
                 classes=range(len(names)), train_only=X.attrs.get("train_only", 0))
    else:  # the split itself (cheap without a sampler): too few rows or groups per class
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the run itself repeats them
            prepare_splits(cfg.model_copy(update={"resampling": ResamplingConfig(sampler="none")}), X, y, groups)
    return X, y, groups


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
        seed=cfg.split.seed, classes=range(len(cfg.data.class_names)), train_only=X.attrs.get("train_only", 0),
        **protocol,
    )


def build_model(cfg: PipelineConfig, length: int, rhythm: np.ndarray | None = None) -> Any:
    """The configured VGG16 for rows of ``length`` values: new, from a weights file, or from a run's network
    (``model.weights: run:ID``, with a new head if asked), with ``model.frozen_blocks`` frozen.

    With ``data.rhythm_columns`` the last of those values feed the rhythm branch, standardised
    with the mean and variance of ``rhythm`` (the training rows' rhythm columns).
    """
    from ecgvgg.models import freeze_blocks, vgg16_1d, vgg16_2d, with_new_head

    m = cfg.model
    if m.weights is not None and m.weights.startswith(RUN_PREFIX):
        from ecgvgg.inference import load_model, run_model_file

        run_id = m.weights[len(RUN_PREFIX):]
        local = run_model_file(cfg.tracking.resolved_uri(), run_id)
        if local is None:
            import mlflow

            mlflow.set_tracking_uri(cfg.tracking.resolved_uri())
        source = load_model(local) if local is not None else load_model(run_id=run_id)
        model = source.model
        if m.new_head:
            model = with_new_head(model, len(cfg.data.class_names))
    else:
        n_rhythm = len(cfg.data.rhythm_columns)
        shape = input_shape(length - n_rhythm, cfg.input.kind, cfg.input.method, cfg.input.size)
        builder = vgg16_1d if cfg.input.kind == "1d" else vgg16_2d
        stats = {}
        if n_rhythm:
            r = np.zeros((1, n_rhythm), np.float32) if rhythm is None else np.asarray(rhythm, np.float64)
            stats = {"rhythm": n_rhythm, "rhythm_mean": r.mean(axis=0).tolist(),
                     "rhythm_variance": np.maximum(r.var(axis=0), 1e-12).tolist()}
            shape = (shape[0] + n_rhythm, 1)
        model = builder(shape, len(cfg.data.class_names), width=m.width, dense_units=m.dense_units, dropout=m.dropout,
                        batch_norm=m.batch_norm, weights=m.weights, **stats)
    return freeze_blocks(model, m.frozen_blocks) if m.frozen_blocks else model


def check_source_run(cfg: PipelineConfig, length: int) -> None:
    """Refuse a ``model.weights: run:ID`` whose input contract differs from this config and data, before any run."""
    from ecgvgg.errors import DataError
    from ecgvgg.inference import run_contract

    run_id = (cfg.model.weights or "")[len(RUN_PREFIX):]
    try:
        contract = run_contract(cfg.tracking.resolved_uri(), run_id)
    except DataError as exc:
        raise ConfigError(f"model.weights: {exc}") from None
    source_input = contract.get("input", {})
    mine = cfg.input.model_dump()
    differs = []
    if contract.get("length") != length:
        differs.append(f"beat length {contract.get('length')} there, {length} here")
    if source_input.get("kind") != mine["kind"]:
        differs.append(f"input.kind {source_input.get('kind')} there, {mine['kind']} here")
    elif mine["kind"] == "2d" and (source_input.get("method"), source_input.get("size")) != (mine["method"], mine["size"]):
        differs.append(f"input.method/size {source_input.get('method')}/{source_input.get('size')} there, "
                       f"{mine['method']}/{mine['size']} here")
    n_source, n_here = len(contract.get("classes", [])), len(cfg.data.class_names)
    if not cfg.model.new_head and contract.get("class_names") != list(cfg.data.class_names):
        differs.append(f"classes {contract.get('class_names')} there, {list(cfg.data.class_names)} here "
                       "(set model.new_head: true for a new class list)")
    if contract.get("ensemble"):
        differs.append("it is a fold ensemble; start from one of its fold runs")
    if differs:
        raise ConfigError(f"model.weights: run {run_id}'s model does not fit this config: " + "; ".join(differs))
    log.info("starting from run %s's network (%d classes there, %d here)", run_id, n_source, n_here)


def rhythm_rows(cfg: PipelineConfig, X: np.ndarray, train_index: np.ndarray) -> np.ndarray | None:
    """The rhythm columns of the (real, not oversampled) training rows, or None without a rhythm branch."""
    n = len(cfg.data.rhythm_columns)
    return np.asarray(X)[train_index, -n:] if n else None


def augment_spec(cfg: PipelineConfig) -> Any:
    """The :class:`ecgvgg.augment.Augment` that the ``training`` section describes."""
    from ecgvgg.augment import Augment

    t = cfg.training
    time_axis = cfg.input.kind == "1d"  # shift, stretch and wander act on (samples, 1) beats
    return Augment(scale=t.augment_scale, noise=t.augment_noise, shift=t.augment_shift if time_axis else 0,
                   stretch=t.augment_stretch if time_axis else 0.0, wander=t.augment_wander if time_axis else 0.0,
                   mixup=t.mixup, rhythm=len(cfg.data.rhythm_columns))


def train(cfg: PipelineConfig, model: Any, shaped: Splits, **extra: Any) -> Any:
    """:func:`ecgvgg.training.fit` with the ``training`` section of ``cfg`` (``extra`` adds or overrides)."""
    from ecgvgg.training import fit

    t = cfg.training
    kwargs = dict(epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate,
                  class_weight=t.class_weight, max_class_weight=t.max_class_weight,
                  max_per_class=cfg.resampling.max_per_class, class_names=list(cfg.data.class_names), monitor=t.monitor,
                  early_stopping_patience=t.early_stopping_patience or None,
                  reduce_lr_patience=t.reduce_lr_patience or None, collapse_patience=t.collapse_patience,
                  collapse_dominance=t.collapse_dominance, collapse_warmup=t.collapse_warmup,
                  stop_on_collapse=t.stop_on_collapse, seed=t.seed, augment=augment_spec(cfg),
                  loss=t.loss, label_smoothing=t.label_smoothing, focal_gamma=t.focal_gamma,
                  optimizer=t.optimizer, weight_decay=t.weight_decay, schedule=t.schedule,
                  warmup_epochs=t.warmup_epochs)
    return fit(model, shaped, **{**kwargs, **extra})


@dataclass
class _Trained:
    """One trained model and its scores on its own test rows (inside its MLflow run)."""

    model: Any
    probs: np.ndarray
    pred: np.ndarray
    scores: dict[str, Any]
    val_scores: dict[str, Any]
    baseline_pred: np.ndarray | None
    reason: str | None
    missed: dict[str, str]
    ci: tuple[float, float]
    epochs_run: int
    model_uri: str
    model_path: Path
    best_epoch: int | None = None


def run_pipeline(
    cfg: PipelineConfig,
    *,
    callbacks: Sequence[Any] = (),
    on_epoch: Callable[[int, Mapping[str, float]], None] | None = None,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
    data: tuple[pd.DataFrame, pd.Series, pd.Series | None] | None = None,
    on_fold: Callable[[int, float], None] | None = None,
    tags: Mapping[str, str] | None = None,
) -> RunResult:
    """Run the configured study as one MLflow run (a parent with a child per fold when
    ``split.folds`` is set) and return its result.

    Data and config problems are found before the run starts, so they leave no run behind;
    anything that fails later ends the run as FAILED (KILLED on Ctrl-C or SIGTERM).
    ``resume_run_id`` continues an interrupted run from its best checkpoint, in the same run.
    ``data`` is what :func:`check_data` returned, to skip loading the data again. ``on_fold``
    is called with each fold's number and test macro-F1; ``tags`` are added to the (parent) run.
    """
    from ecgvgg import tracking

    if cfg.split.folds and resume_run_id:
        raise ConfigError("--resume: cross-validated runs (split.folds) cannot be resumed; start them again")
    if cfg.training.unfreeze_after and resume_run_id:
        raise ConfigError("--resume: two-phase fine-tuning (training.unfreeze_after) cannot be resumed; start again")
    X, y, groups = check_data(cfg, data)
    kind = split_kind(cfg)
    if kind == "ungrouped beats":
        log.warning("the split is by beat: beats of one recording can sit in both training and test, so the "
                    "score is optimistic; set data.group_column (record, patient or segment) to split by group")
    grouped = groups if (cfg.split.grouped or cfg.split.protocol == "de_chazal") else None
    if cfg.split.folds:
        folds = cv_folds(y, folds=cfg.split.folds, groups=grouped, val_size=cfg.split.val_size,
                         seed=cfg.split.seed, classes=range(len(cfg.data.class_names)),
                         train_only=X.attrs.get("train_only", 0))
        return _run_cv(cfg, X, y, grouped, folds, kind, callbacks, on_epoch, parent_run_id, on_fold, tags or {})
    splits = prepare_splits(cfg, X, y, groups)
    Xa, ya, features = X.to_numpy(dtype=np.float32), y.to_numpy(), list(X.columns)
    dataset = _dataset_frame(X, y, groups, cfg)
    del X

    uri = cfg.tracking.resolved_uri()
    experiment_id = tracking.configure(uri, cfg.tracking.experiment)
    with ExitStack() as held:
        resume = None
        if resume_run_id:  # hold the run's lock first: a live run is refused, a dead one is ours
            if not tracking.run_exists(uri, resume_run_id):
                raise ConfigError(f"--resume {resume_run_id}: no such run in {uri}")
            held.enter_context(tracking.run_lock(uri, resume_run_id))
            resume = tracking.resume_point(uri, resume_run_id, cfg.flat(), cfg.training.monitor)
        name = None if resume_run_id else run_name(cfg, nested=parent_run_id is not None)
        with tracking.start_run(experiment_id, name, run_id=resume_run_id, nested=parent_run_id is not None,
                                lock=resume is None) as run:
            run_id = run.info.run_id
            log.info("MLflow run %s (%s) %s", run_id, run.info.run_name, "resumed" if resume else "started")
            if resume is None:
                _log_setup(cfg, splits.counts, kind, dataset, **(tags or {}))
            else:
                tracking.clear_interrupted(run_id)
            test_groups = None if grouped is None else np.asarray(grouped)[splits.test_index]
            seen = None if grouped is None else np.asarray(grouped)[np.r_[splits.train_index, splits.val_index]]
            out = _train_and_score(cfg, splits, Xa, ya, test_groups, run_id, features, resume=resume,
                                   callbacks=callbacks, on_epoch=on_epoch, seen_groups=seen)
    return RunResult(run_id, out.scores, out.val_scores, list(cfg.data.class_names), out.reason is not None,
                     out.reason, out.model_uri, out.model_path, out.epochs_run, out.missed, out.ci,
                     _macro_f1(splits.y_test, out.baseline_pred, cfg), kind, best_epoch=out.best_epoch,
                     run_name=run.info.run_name)


def run_name(cfg: PipelineConfig, nested: bool = False) -> str:
    """A run name from the config (sampler, model, width) and a short unique suffix.

    ``tracking.run_name`` is used as it is for a top-level run and gets the suffix for a nested
    one, so that sweep, cross-validation and tuning children never share a name. The suffix does
    not come from Python's ``random``, which training seeds.
    """
    suffix = uuid.uuid4().hex[:6]
    if cfg.tracking.run_name:
        return f"{cfg.tracking.run_name}-{suffix}" if nested else cfg.tracking.run_name
    kind = "1d" if cfg.input.kind == "1d" else f"2d-{cfg.input.method}"
    return f"{cfg.resampling.sampler}-vgg16_{kind}-w{cfg.model.width:g}-{suffix}"


def _dataset_frame(X: pd.DataFrame, y: pd.Series, groups: pd.Series | None, cfg: PipelineConfig) -> pd.DataFrame:
    """The table as MLflow's dataset input sees it: features, ``label`` and the group column."""
    frame = X.rename(columns=str).assign(label=y.to_numpy())
    if groups is not None and cfg.data.group_column:
        frame[cfg.data.group_column] = groups.to_numpy()
    return frame


def _log_setup(cfg: PipelineConfig, counts: Mapping[str, Mapping[int, int]], kind: str,
               dataset: pd.DataFrame | None = None, **tags: str) -> None:
    """Tags, params, class counts, the dataset input and provenance of a new run."""
    import mlflow

    from ecgvgg import tracking

    mlflow.set_tags({"sampler": cfg.resampling.sampler, "model": f"vgg16_{cfg.input.kind}",
                     "input": cfg.input.kind if cfg.input.kind == "1d" else f"2d-{cfg.input.method}",
                     "split_kind": kind, "collapsed": "unknown", **tags})
    tracking.log_params(cfg.flat())
    tracking.log_counts(counts, list(cfg.data.class_names))
    if dataset is not None:
        tracking.log_provenance(dataset, cfg.data.resolved_path())


def _macro_f1(y_true: np.ndarray, pred: np.ndarray | None, cfg: PipelineConfig) -> float | None:
    """Macro-F1 of ``pred`` over the configured classes, or None without predictions."""
    from ecgvgg.metrics import per_class_scores

    if pred is None:
        return None
    return float(per_class_scores(y_true, pred, range(len(cfg.data.class_names)))["macro_f1"])


def _log_verdict(reason: str | None, missed: Mapping[str, str]) -> None:
    """Tags ``collapsed``, ``collapse_reason`` and ``missed_classes`` (empty when none)."""
    import mlflow

    mlflow.set_tags({"collapsed": "true" if reason else "false", "collapse_reason": reason or "",
                     "missed_classes": ",".join(missed)})


def _train_and_score(cfg: PipelineConfig, splits: Splits, Xa: np.ndarray, ya: np.ndarray,
                     test_groups: np.ndarray | None, run_id: str, features: Sequence[Any], *, resume: Any = None,
                     callbacks: Sequence[Any] = (), on_epoch: Callable[[int, Mapping[str, float]], None] | None = None,
                     seen_groups: np.ndarray | None = None) -> _Trained:
    """Inside the active run: train on ``splits``, score the test rows, the baseline and the verdict, log the model."""
    import mlflow
    from sklearn.metrics import classification_report

    from ecgvgg import tracking
    from ecgvgg.inference import save_model
    from ecgvgg.metrics import bootstrap_macro_f1, confusion, flat_scores, held_out_verdict, per_class_scores
    from ecgvgg.models import trainable_count
    from ecgvgg.serving import log_beat_model
    from ecgvgg.training import setup_device

    names = list(cfg.data.class_names)
    classes = list(range(len(names)))
    t = cfg.training
    run_dir = tracking.local_run_dir(cfg.tracking.resolved_uri(), run_id)
    shaped = splits.map_x(lambda a: reshape(a, cfg.input.kind, cfg.input.method, cfg.input.size))
    strategy = setup_device(mixed_precision=t.mixed_precision, deterministic=t.deterministic, seed=t.seed)
    with strategy.scope():
        model = (build_model(cfg, Xa.shape[1], rhythm_rows(cfg, Xa, splits.train_index)) if resume is None
                 else tracking.load_checkpoint(resume.checkpoint))

    def epoch_hook(epoch: int, logs: Mapping[str, float]) -> None:
        tracking.log_epoch(epoch, logs)
        if on_epoch is not None:
            on_epoch(epoch, logs)

    started = time.perf_counter()
    phased = t.unfreeze_after is not None and resume is None
    result = train(cfg, model, shaped, checkpoint_path=run_dir / "best.keras", on_epoch=epoch_hook,
                   callbacks=callbacks, compile_model=resume is None,
                   initial_epoch=resume.epoch if resume else 0, initial_best=resume.best if resume else None,
                   initial_best_epoch=resume.best_epoch if resume else None,
                   **({"epochs": t.unfreeze_after} if phased else {}))
    if phased and result.epochs_run >= t.unfreeze_after:  # phase two: everything trains, at a lower rate
        result = _fine_tune_all(cfg, model, shaped, result, checkpoint_path=run_dir / "best.keras",
                                on_epoch=epoch_hook, callbacks=callbacks)
    seconds = time.perf_counter() - started
    if result.class_weight:
        mlflow.log_params({f"class_weight_{names[c]}": round(w, 6) for c, w in result.class_weight.items()})
    trainable = trainable_count(model)  # what trained last: after a second phase, everything
    mlflow.log_metrics({"epochs_run": result.epochs_run, "best_epoch": result.best_epoch or 0,
                        "training_seconds": round(seconds, 2), "params_total": model.count_params(),
                        "params_trainable": trainable, "params_non_trainable": model.count_params() - trainable})
    title = mlflow.active_run().info.run_name
    mlflow.log_figure(tracking.training_curves_figure(result.history, names, f"{title}: training",
                                                      first_epoch=(resume.epoch if resume else 0) + 1),
                      "training_curves.png")
    tracking.log_confusion(confusion(shaped.y_val, result.val_pred, classes), names, "val",
                           f"{title}: validation")
    # the returned model's validation scores (the per-epoch val_* history ends at the last epoch)
    mlflow.log_metrics(flat_scores(per_class_scores(shaped.y_val, result.val_pred, classes), names, "model_val"))

    probs = np.asarray(model.predict(shaped.X_test, batch_size=t.batch_size, verbose=0), dtype=np.float32)
    pred = np.asarray(classes)[np.argmax(probs, axis=1)]
    scores = per_class_scores(shaped.y_test, pred, classes)
    matrix = confusion(shaped.y_test, pred, classes)
    report = classification_report(shaped.y_test, pred, labels=classes, target_names=names, digits=3,
                                   zero_division=0)
    tracking.log_evaluation(scores, matrix, report, names, prefix="test", title=f"{title}: test")
    ci = bootstrap_macro_f1(shaped.y_test, pred, classes, test_groups, seed=cfg.split.seed)
    mlflow.log_metrics({"test_macro_f1_ci_low": ci[0], "test_macro_f1_ci_high": ci[1]})
    baseline = _baseline(cfg, Xa, ya, splits.train_index, Xa[splits.test_index])
    if baseline is not None:
        mlflow.log_metric("baseline_rf_macro_f1", _macro_f1(shaped.y_test, baseline, cfg))

    # the verdict on the returned model, over all its held-out rows (validation + test)
    reason, missed = held_out_verdict({"validation": (shaped.y_val, result.val_pred), "test": (shaped.y_test, pred)},
                                      classes, names, dominance=t.collapse_dominance,
                                      min_rows=t.collapse_min_rows)
    if reason is None and result.stopped_on_collapse:
        reason, missed = result.collapse_reason, {}
    _log_verdict(reason, missed)

    meta = model_contract(cfg, features, seen_groups)
    model_path = save_model(model, run_dir / "model.keras", meta)
    model_uri = log_beat_model(model_path, pd.DataFrame(Xa[splits.test_index[:5]], columns=meta["data"]["features"]),
                               meta)
    scores["confusion_matrix"] = matrix.tolist()
    describe_run(scores, names, reason, missed, ci, _macro_f1(shaped.y_test, baseline, cfg), split_kind(cfg))
    return _Trained(model, probs, pred, scores, result.val_scores, baseline, reason, missed, ci, result.epochs_run,
                    model_uri, model_path, result.best_epoch)


def describe_run(scores: Mapping[str, Any], names: Sequence[str], reason: str | None, missed: Mapping[str, str],
                 ci: tuple[float, float] | None, baseline: float | None, kind: str,
                 cv: Mapping[str, Any] | None = None) -> str:
    """Write the run's description (MLflow's note): verdict, macro-F1 with interval, recall per class, baseline."""
    import mlflow

    what = "Out-of-fold" if cv else "Test"
    lines = [f"**Collapsed: {reason}.**" if reason else "**Not collapsed.**",
             f"{what} macro-F1 **{scores['macro_f1']:.3f}**"
             + (f" (95% bootstrap interval {ci[0]:.3f}-{ci[1]:.3f})" if ci else "") + f"; split: {kind}."]
    if cv:
        lines.append(f"Cross-validated macro-F1 {cv['macro_f1'][0]:.3f} ± {cv['macro_f1'][1]:.3f} over {cv['folds']} folds.")
    lines.append("Recall: " + ", ".join(f"{n} {scores['recall'][i]:.3f}" for i, n in enumerate(names)) + ".")
    if baseline is not None:
        lines.append(f"VGG16 vs random forest: {scores['macro_f1']:.3f} vs {baseline:.3f} "
                     f"({scores['macro_f1'] - baseline:+.3f}).")
    if missed:
        lines.append("Missed (recall 0): " + "; ".join(f"{n} on {where}" for n, where in missed.items()) + ".")
    text = "\n\n".join(lines)
    mlflow.set_tag("mlflow.note.content", text)
    return text


def _fine_tune_all(cfg: PipelineConfig, model: Any, shaped: Splits, first: Any, **kwargs: Any) -> Any:
    """Unfreeze every layer and train on from where the frozen phase stopped, at the fine-tuning rate."""
    import mlflow

    t = cfg.training
    rate = t.fine_tune_learning_rate or t.learning_rate / 10
    for layer in model.layers:
        layer.trainable = True
    scores = first.history.get(t.monitor, [])
    best = (min(scores) if t.monitor.endswith("loss") else max(scores)) if scores else None
    log.info("epoch %d: all blocks unfrozen; fine-tuning at learning rate %g", first.epochs_run, rate)
    mlflow.log_metric("unfrozen_at_epoch", first.epochs_run)
    second = train(cfg, model, shaped, learning_rate=rate, compile_model=True, initial_epoch=first.epochs_run,
                   initial_best=best, initial_best_epoch=first.best_epoch, **kwargs)
    second.history = {k: first.history.get(k, []) + second.history.get(k, [])
                      for k in {*first.history, *second.history}}
    second.epochs_run += first.epochs_run
    return second


def model_contract(cfg: PipelineConfig, features: Sequence[Any], seen_groups: Sequence[Any] | None = None,
                   ) -> dict[str, Any]:
    """What a model trained with ``cfg`` needs to read raw beats: classes, reshaping, the table's columns,
    and the groups its training and validation rows came from (to warn when it is scored on them)."""
    from ecgvgg.inference import metadata

    d = cfg.data
    return metadata(range(len(d.class_names)), d.class_names, cfg.input.model_dump(), len(features),
                    {"label_column": d.label_column, "group_column": d.group_column, "header": d.header,
                     "features": [str(f) for f in features], "rhythm_columns": list(d.rhythm_columns),
                     **({"train_groups": sorted({str(g) for g in seen_groups})} if seen_groups is not None else {})})


def _baseline(cfg: PipelineConfig, X: np.ndarray, y: np.ndarray, train: np.ndarray, X_test: np.ndarray,
              ) -> np.ndarray | None:
    """The configured baseline's test predictions, or None: trained on the ``train`` rows before
    oversampling, at most ``resampling.max_per_class`` of each class (one draw, as one epoch sees)."""
    if cfg.baseline == "none":
        return None
    from ecgvgg.baselines import random_forest_predict
    from ecgvgg.resampling import cap_per_class

    rows = cap_per_class(train, y, cfg.resampling.max_per_class, np.random.default_rng(cfg.training.seed))
    return random_forest_predict(X[rows], y[rows], X_test, seed=cfg.training.seed)


def _run_cv(cfg: PipelineConfig, X: pd.DataFrame, y: pd.Series, groups: pd.Series | None,
            folds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], kind: str, callbacks: Sequence[Any],
            on_epoch: Callable[[int, Mapping[str, float]], None] | None, parent_run_id: str | None,
            on_fold: Callable[[int, float], None] | None = None, tags: Mapping[str, str] | None = None) -> RunResult:
    """K-fold cross-validation: a parent run, a child run per fold, out-of-fold scores and a fold ensemble."""
    import mlflow

    from ecgvgg import tracking
    from ecgvgg.data import class_counts
    from ecgvgg.inference import save_model
    from ecgvgg.metrics import bootstrap_macro_f1, held_out_verdict
    from ecgvgg.serving import log_beat_model
    from ecgvgg.models import fold_ensemble
    from ecgvgg.resampling import oversample_split

    names = list(cfg.data.class_names)
    classes = list(range(len(names)))
    Xa, ya, features = X.to_numpy(dtype=np.float32), y.to_numpy().astype(np.int64), list(X.columns)
    ga = None if groups is None else np.asarray(groups)
    uri = cfg.tracking.resolved_uri()
    experiment_id = tracking.configure(uri, cfg.tracking.experiment)
    n_main = len(ya) - X.attrs.get("train_only", 0)  # extra training tables are never scored
    fold_of = np.zeros(n_main, dtype=np.int64)
    probs = np.zeros((n_main, len(classes)), dtype=np.float32)
    baseline = np.zeros(n_main, dtype=np.int64) if cfg.baseline != "none" else None
    fold_results: list[_Trained] = []
    dataset = _dataset_frame(X, y, groups, cfg)
    started = time.perf_counter()
    with tracking.start_run(experiment_id, run_name(cfg, nested=parent_run_id is not None),
                            nested=parent_run_id is not None) as parent:
        run_id = parent.info.run_id
        log.info("MLflow run %s (%s) started (%d-fold cross-validation)", run_id, parent.info.run_name, len(folds))
        _log_setup(cfg, {"all": class_counts(ya, classes)}, kind, dataset, cv="true", **(tags or {}))
        for k, (train, val, test) in enumerate(folds, start=1):
            log.info("fold %d of %d: %d training, %d validation, %d test rows", k, len(folds), len(train),
                     len(val), len(test))
            splits = oversample_split(Xa, ya, train, val, test, sampler=cfg.resampling.sampler,
                                      sampler_params=cfg.resampling.params, seed=cfg.split.seed, classes=classes)
            with tracking.start_run(experiment_id, f"{parent.info.run_name}-fold{k}", nested=True) as child:
                _log_setup(cfg, splits.counts, kind, dataset, fold=str(k))
                out = _train_and_score(cfg, splits, Xa, ya, None if ga is None else ga[test], child.info.run_id,
                                       features, callbacks=callbacks, on_epoch=on_epoch,
                                       seen_groups=None if ga is None else ga[np.r_[train, val]])
            fold_of[test], probs[test] = k, out.probs
            if baseline is not None:
                baseline[test] = out.baseline_pred
            fold_results.append(out)
            if on_fold is not None:
                on_fold(k, out.scores["macro_f1"])

        pred = np.asarray(classes)[np.argmax(probs, axis=1)]
        ya, ga = ya[:n_main], None if ga is None else ga[:n_main]
        scores, matrix = _log_oof(ya, pred, classes, names)
        ci = bootstrap_macro_f1(ya, pred, classes, ga, seed=cfg.split.seed)
        summary = _cv_summary([f.scores for f in fold_results], names)
        mlflow.log_metrics({"oof_macro_f1_ci_low": ci[0], "oof_macro_f1_ci_high": ci[1], **summary["metrics"]})
        if baseline is not None:
            mlflow.log_metric("baseline_rf_macro_f1", _macro_f1(ya, baseline, cfg))
        _log_oof_predictions(ya, pred, probs, fold_of, ga, cfg)
        reason, missed = held_out_verdict({"out-of-fold": (ya, pred)}, classes, names,
                                          dominance=cfg.training.collapse_dominance,
                                          min_rows=cfg.training.collapse_min_rows)
        _log_verdict(reason, missed)

        ensemble = fold_ensemble([f.model for f in fold_results])
        meta = {**model_contract(cfg, features, ga), "ensemble": True}
        model_path = save_model(ensemble, tracking.local_run_dir(uri, run_id) / "model.keras", meta)
        model_uri = log_beat_model(model_path, pd.DataFrame(Xa[:5], columns=meta["data"]["features"]), meta)
        mlflow.log_metrics({"params_total": ensemble.count_params(), "params_trainable": 0,
                            "params_non_trainable": ensemble.count_params(),
                            "training_seconds": round(time.perf_counter() - started, 2),
                            "epochs_run": sum(f.epochs_run for f in fold_results)})
        describe_run(scores, names, reason, missed, ci, _macro_f1(ya, baseline, cfg), kind, summary)
    scores["confusion_matrix"] = matrix.tolist()
    val_f1 = float(np.mean([f.val_scores.get("macro_f1", 0.0) for f in fold_results]))
    return RunResult(run_id, scores, {"macro_f1": val_f1}, names, reason is not None, reason, model_uri, model_path,
                     sum(f.epochs_run for f in fold_results), missed, ci, _macro_f1(ya, baseline, cfg), kind,
                     summary, run_name=parent.info.run_name)


def _log_oof(y: np.ndarray, pred: np.ndarray, classes: Sequence[int], names: Sequence[str]) -> tuple[dict, np.ndarray]:
    """Log the pooled out-of-fold scores, confusion matrix and report with the ``oof`` prefix."""
    from sklearn.metrics import classification_report

    from ecgvgg import tracking
    from ecgvgg.metrics import confusion, per_class_scores

    scores = per_class_scores(y, pred, classes)
    matrix = confusion(y, pred, classes)
    report = classification_report(y, pred, labels=list(classes), target_names=list(names), digits=3, zero_division=0)
    tracking.log_evaluation(scores, matrix, report, names, prefix="oof")
    return scores, matrix


def _cv_summary(fold_scores: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
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


def _log_oof_predictions(y: np.ndarray, pred: np.ndarray, probs: np.ndarray, fold: np.ndarray,
                         groups: np.ndarray | None, cfg: PipelineConfig) -> None:
    """Log ``oof_predictions.parquet``: row, fold, label, prediction, the group and one probability per class."""
    import tempfile

    import mlflow

    frame = pd.DataFrame({"row": np.arange(len(y)), "fold": fold, "label": y, "prediction": pred})
    if groups is not None:
        frame[cfg.data.group_column or "group"] = groups
    for i, name in enumerate(cfg.data.class_names):
        frame[f"p_{name}"] = probs[:, i]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "oof_predictions.parquet"
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path))


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

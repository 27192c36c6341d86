"""Train with Keras ``model.fit``: class weights, per-class validation, collapse detection and checkpoints."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ecgvgg.core.adversary import served
from ecgvgg.core.augment import Augment
from ecgvgg.core.class_weights import balanced_class_weight, capped, records_class_weight
from ecgvgg.core.distributed import fit_workaround
from ecgvgg.core.inputs import epoch_counts, feature_batches, make_dataset
from ecgvgg.core.config import TrainingConfig
from ecgvgg.core.metrics import collapse_reason, dominant_class, flat_scores, per_class_scores
from ecgvgg.core.resampling import Splits

log = logging.getLogger("ecgvgg")

ClassWeight = str | Mapping[int, float] | None


@dataclass
class FitResult:
    """What training produced: the (best) model, per-epoch history and the collapse verdict."""

    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int | None
    class_weight: dict[int, float] | None
    collapsed: bool
    collapse_reason: str | None
    checkpoint: Path | None = None
    val_scores: dict[str, Any] = field(default_factory=dict)
    val_pred: np.ndarray | None = None
    stopped_on_collapse: bool = False
    #: Why an ``on_epoch`` hook stopped training early (a pruned trial), else None.
    stopped_by: str | None = None


def setup_device(*, mixed_precision: bool | str = "auto", deterministic: bool = False, seed: int = 0) -> tf.distribute.Strategy:
    """Seed everything, pick the precision policy and return the distribution strategy to build models in.

    ``mixed_precision="auto"`` turns float16 compute on when a GPU is present; several GPUs are
    used through ``MirroredStrategy``, several processes (``TF_CONFIG``) through
    ``MultiWorkerMirroredStrategy``; ``deterministic`` enables TensorFlow's op determinism.
    """
    from ecgvgg.core.distributed import cluster, multi_worker_strategy

    strategy = multi_worker_strategy() if cluster() is not None else None  # first: before TensorFlow runs any op
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    use_mixed = bool(gpus) if mixed_precision == "auto" else bool(mixed_precision)
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    if strategy is not None:
        return strategy
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def shift_to_prior(model: keras.Model, counts: Mapping[int, int], alpha: float, classes: Sequence[int]) -> None:
    """Add ``alpha * log(class share)`` to the biases of the ``predictions`` layer (shares of ``counts``, at least
    1e-4): the softmax then weighs each class by its share to the power ``alpha``; ``alpha`` 0 changes nothing."""
    if not alpha:
        return
    layer = model.get_layer("predictions")
    kernel, bias = layer.get_weights()
    shares = np.array([counts.get(int(c), 0) for c in classes], dtype=np.float64)
    shares = np.maximum(shares / max(shares.sum(), 1.0), 1e-4)
    layer.set_weights([kernel, (bias + alpha * np.log(shares)).astype(bias.dtype)])


def resolve_class_weight(spec: ClassWeight, splits: Splits, max_per_class: int | None = None) -> dict[int, float] | None:
    """Turn a class-weight setting into Keras' dict.

    ``"balanced"`` is computed from the training counts *before* oversampling (the data as
    collected). ``"auto"`` (the default) means balanced weights when no sampler ran and none
    when the training split was oversampled, so the two corrections are never stacked unasked.
    With ``max_per_class`` (class-balanced epochs) the counts are those that an epoch draws.
    """
    counts = epoch_counts(splits.counts_before, max_per_class)
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        return balanced_class_weight(counts) if splits.sampler == "none" else None
    if spec == "records":
        if not splits.records:
            raise ValueError("class_weight='records' needs the rows' records (data.group_column)")
        return records_class_weight(counts, splits.records)
    if spec == "balanced":
        if splits.sampler != "none":
            warnings.warn(
                f"class_weight='balanced' on a training split already oversampled with {splits.sampler}: "
                "both corrections apply; use class_weight='auto' to apply only one",
                stacklevel=2,
            )
        return balanced_class_weight(counts)
    if isinstance(spec, Mapping):
        return {int(c): float(w) for c, w in spec.items()}
    raise ValueError(f"class_weight must be 'auto', 'balanced', 'records', 'none' or a dict, got {spec!r}")


def make_loss(
    name: str = "cross_entropy", *, label_smoothing: float = 0.0, focal_gamma: float = 2.0, one_hot: bool = False
) -> Any:
    """The training loss, ``cross_entropy`` or ``focal``, for one-hot targets or (``one_hot=False``,
    plain cross-entropy only) class indices."""
    if name == "focal":
        return keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=focal_gamma, label_smoothing=label_smoothing)
    if name != "cross_entropy":
        raise ValueError(f"unknown loss {name!r}: use cross_entropy or focal")
    if one_hot or label_smoothing:
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def make_optimizer(
    name: str = "adam",
    learning_rate: float = 1e-3,
    *,
    weight_decay: float = 1e-4,
    schedule: str = "plateau",
    epochs: int = 30,
    warmup_epochs: int = 0,
    steps_per_epoch: int = 1,
) -> keras.optimizers.Optimizer:
    """Adam or AdamW; ``schedule="cosine"`` decays the rate over ``epochs`` after a linear warm-up."""
    rate: Any = learning_rate
    if schedule == "cosine":
        warmup = warmup_epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            learning_rate / 100 if warmup else learning_rate,
            decay_steps=max(1, (epochs - warmup_epochs) * steps_per_epoch),
            alpha=0.01,
            warmup_target=learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    elif schedule != "plateau":
        raise ValueError(f"unknown schedule {schedule!r}: use plateau or cosine")
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=weight_decay)
    if name != "adam":
        raise ValueError(f"unknown optimizer {name!r}: use adam or adamw")
    return keras.optimizers.Adam(learning_rate=rate)


class ValidationMetrics(keras.callbacks.Callback):
    """After each epoch, score the validation split per class and add the scores to ``logs``.

    Adds ``val_loss``, ``val_accuracy``, ``val_macro_f1`` and ``val_{precision,recall,f1}_<class>``
    so that early stopping and checkpoints can monitor ``val_macro_f1``.
    """

    def __init__(
        self,
        X_val: np.ndarray,
        y_val: np.ndarray,
        classes: Sequence[int],
        names: Sequence[str],
        batch_size: int = 256,
        on_epoch: Callable[[int, dict[str, float]], str | None] | None = None,
    ):
        super().__init__()
        self.y_val = np.asarray(y_val)
        self.classes, self.names = list(classes), list(names)
        self.dataset = feature_batches(X_val, batch_size)
        self.on_epoch = on_epoch
        self.last_pred: np.ndarray | None = None
        self.last_scores: dict[str, Any] = {}
        self.stop_reason: str | None = None

    def score(self) -> dict[str, float]:
        """Predict the validation split with the current weights and return flat metrics."""
        probs = self.model.predict(self.dataset, verbose=0)
        pred = np.asarray(self.classes)[np.argmax(probs, axis=1)]
        self.last_pred = pred
        self.last_scores = per_class_scores(self.y_val, pred, self.classes)
        idx = np.searchsorted(self.classes, self.y_val)
        p_true = np.clip(probs[np.arange(len(idx)), idx], 1e-7, 1.0)
        return {"val_loss": float(-np.mean(np.log(p_true))), **flat_scores(self.last_scores, self.names, "val")}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        flat = self.score()
        if logs is not None:
            logs.update(flat)
        if self.on_epoch is not None and self.stop_reason is None:
            self.stop_reason = self.on_epoch(epoch, dict(logs or flat)) or None
            if self.stop_reason is not None:
                self.model.stop_training = True


class CollapseMonitor(keras.callbacks.Callback):
    """Watch the validation predictions for a collapsed state during training.

    The state is one class predicted for at least ``dominance`` of the validation rows. A
    batch-normalised network often does that for its first few epochs while its moving
    statistics settle, so the first ``warmup`` epochs never count, and after them the state
    counts only once it has lasted ``patience`` epochs in a row. A line is logged only when the
    counted state starts or ends (classes never predicted are judged on the returned model, over
    all held-out rows). With ``stop`` training stops then.
    """

    def __init__(
        self, metrics: ValidationMetrics, *, patience: int = 3, dominance: float = 0.98, stop: bool = False, warmup: int = 0
    ):
        super().__init__()
        self.metrics, self.patience, self.dominance, self.stop = metrics, patience, dominance, stop
        self.warmup = warmup
        self.streak = 0
        self.collapsed = False
        self.reason: str | None = None
        self.stopped = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        m = self.metrics
        ready = epoch >= self.warmup and m.last_pred is not None
        reason = dominant_class(m.last_pred, m.classes, m.names, self.dominance) if ready else None  # type: ignore[arg-type]
        self.streak = self.streak + 1 if reason else 0
        lasting = self.streak >= self.patience
        if lasting and not self.collapsed:
            log.warning("epoch %d: model looks collapsed for %d epochs: %s", epoch + 1, self.streak, reason)
        elif self.collapsed and not lasting:
            log.info("epoch %d: model no longer looks collapsed", epoch + 1)
        self.collapsed, self.reason = lasting, reason if lasting else None
        if logs is not None:
            logs["collapsed"] = float(lasting)
        if lasting and self.stop:
            self.model.stop_training = True
            self.stopped = True


class BestCheckpoint(keras.callbacks.Callback):
    """Save the best model so far to a ``.keras`` file, atomically: an interrupt during a save
    leaves the previous checkpoint intact."""

    def __init__(self, path: Path, *, monitor: str, mode: str, initial_best: float | None = None):
        super().__init__()
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.best = initial_best if initial_best is not None else (-np.inf if mode == "max" else np.inf)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not (value > self.best if self.mode == "max" else value < self.best):
            return
        self.best = value
        from ecgvgg.core.files import atomic

        with atomic(self.path) as partial:
            served(self.model).save(partial)


def fit(
    model: keras.Model,
    splits: Splits,
    training: TrainingConfig | None = None,
    *,
    class_names: Sequence[str] | None = None,
    max_per_class: int | None = None,
    proportions: Mapping[int, float] | None = None,
    augment: Augment | None = None,
    checkpoint_path: str | Path | None = None,
    compile_model: bool = True,
    initial_epoch: int = 0,
    initial_best: float | None = None,
    initial_best_epoch: int | None = None,
    on_epoch: Callable[[int, dict[str, float]], str | None] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
) -> FitResult:
    """Compile and train ``model`` on ``splits`` already shaped for it, as ``training`` says.

    Monitors ``training.monitor`` (``val_macro_f1`` by default), keeps the best weights (and the
    best model in ``checkpoint_path``, a ``.keras`` file), and reports whether the model collapsed.
    ``max_per_class`` draws class-balanced epochs; ``proportions`` draws every batch with those class
    shares (see :func:`ecgvgg.core.inputs.make_dataset`). ``on_epoch(epoch, logs)`` may return a reason to
    stop (e.g. a pruned trial): training then ends after that epoch, with ``stopped_by`` set. To
    resume, pass a loaded checkpoint with ``compile_model=False``, the epochs done as
    ``initial_epoch`` and the best monitored value so far as ``initial_best`` (reached at
    ``initial_best_epoch``): with early stopping, the model returned is then the best over the
    whole run, which may be the checkpoint from before the interruption.
    """
    t = training or TrainingConfig()
    names = _class_names(splits, class_names)
    weights = _capped_class_weight(t, splits, max_per_class)
    one_hot = t.loss != "cross_entropy" or bool(t.label_smoothing) or bool(augment and augment.mixup)
    net, model = model, _trained(model, t, splits)
    if compile_model or model is not net:
        _compile(model, t, splits, max_per_class, initial_epoch, one_hot)
    metrics_cb = ValidationMetrics(splits.X_val, splits.y_val, splits.classes, names, t.batch_size, on_epoch)
    collapse_cb = CollapseMonitor(
        metrics_cb,
        patience=t.collapse_patience,
        dominance=t.collapse_dominance,
        stop=t.stop_on_collapse,
        warmup=max(0, t.collapse_warmup - initial_epoch),
    )
    early, cbs = _callbacks(t, checkpoint_path, initial_best)
    train = make_dataset(
        splits.X_train,
        splits.y_train,
        t.batch_size,
        shuffle=True,
        seed=t.seed,
        augment=augment,
        num_classes=int(net.output_shape[-1]) if one_hot else None,
        max_per_class=max_per_class,
        proportions=proportions,
        steps=t.steps_per_epoch,
        groups=splits.train_groups if model is not net else None,
    )
    with fit_workaround(model, lambda: next(iter(train))):
        hist = model.fit(
            train,
            epochs=t.epochs,
            initial_epoch=initial_epoch,
            class_weight=weights,
            callbacks=[metrics_cb, collapse_cb, *cbs, *callbacks],
            verbose=verbose,
            shuffle=False,
        )
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    best_epoch = _returned_weights(
        model, history.get(t.monitor, []), t.monitor, early, checkpoint_path, initial_epoch, initial_best, initial_best_epoch
    )
    shift_to_prior(net, splits.counts_before, t.prior_shift, splits.classes)  # nothing at 0
    reason = _verdict(t, splits, names, metrics_cb, collapse_cb)
    return FitResult(
        net,
        history,
        len(history.get(t.monitor, [])),
        best_epoch,
        weights,
        reason is not None,
        reason,
        Path(checkpoint_path) if checkpoint_path else None,
        metrics_cb.last_scores,
        metrics_cb.last_pred,
        collapse_cb.stopped,
        metrics_cb.stop_reason,
    )


def _trained(net: keras.Model, t: TrainingConfig, splits: Splits) -> keras.Model:
    """The model that ``fit`` trains: ``net`` beside a record head (``training.subject_adversary``), else ``net``."""
    if not t.subject_adversary:
        return net
    if splits.train_groups is None:
        raise ValueError("training.subject_adversary needs the record of every training row (Splits.train_groups)")
    from ecgvgg.core.adversary import SubjectInvariant

    return SubjectInvariant(net, int(splits.train_groups.max()) + 1, t.subject_adversary)


def _verdict(
    t: TrainingConfig, splits: Splits, names: Sequence[str], metrics_cb: ValidationMetrics, collapse_cb: CollapseMonitor
) -> str | None:
    """Why the returned weights collapsed on the validation rows, or None (ecgvgg.core.study pools them with test)."""
    metrics_cb.score()  # validation predictions of the weights we return
    assert metrics_cb.last_pred is not None
    reason = collapse_reason(
        splits.y_val, metrics_cb.last_pred, splits.classes, names, dominance=t.collapse_dominance, check_recall=False
    )
    if collapse_cb.stopped and reason is None:
        reason = f"training stopped on collapse ({collapse_cb.reason})"
    return reason


def _capped_class_weight(t: TrainingConfig, splits: Splits, max_per_class: int | None) -> dict[int, float] | None:
    """The class weights in force: ``training.class_weight`` resolved, computed ones capped at ``max_class_weight``."""
    weights = resolve_class_weight(t.class_weight, splits, max_per_class)
    if weights and not isinstance(t.class_weight, Mapping):
        weights = capped(weights, t.max_class_weight)
    return weights


def _class_names(splits: Splits, class_names: Sequence[str] | None) -> list[str]:
    """The class names to report (default: the labels as text); refuses a mismatch or an empty validation split."""
    names = list(class_names) if class_names is not None else [str(c) for c in splits.classes]
    if len(names) != len(splits.classes):
        raise ValueError(f"{len(names)} class names for {len(splits.classes)} classes")
    if len(splits.X_val) == 0:
        raise ValueError("the validation split is empty")
    return names


def _compile(
    model: keras.Model, t: TrainingConfig, splits: Splits, max_per_class: int | None, initial_epoch: int, one_hot: bool
) -> None:
    """Compile with the configured optimizer (its schedule over the epochs left) and loss."""
    rows = sum(epoch_counts(splits.counts_after, max_per_class).values()) if max_per_class else len(splits.X_train)
    rows = t.steps_per_epoch * t.batch_size if t.steps_per_epoch else rows
    opt = make_optimizer(
        t.optimizer,
        t.learning_rate,
        weight_decay=t.weight_decay,
        schedule=t.schedule,
        epochs=t.epochs - initial_epoch,
        warmup_epochs=t.warmup_epochs,
        steps_per_epoch=-(-rows // t.batch_size),
    )
    objective = make_loss(t.loss, label_smoothing=t.label_smoothing, focal_gamma=t.focal_gamma, one_hot=one_hot)
    model.compile(opt, loss=objective, metrics=["accuracy"])


def _callbacks(
    t: TrainingConfig,
    checkpoint_path: str | Path | None,
    initial_best: float | None,
) -> tuple[keras.callbacks.EarlyStopping | None, list[keras.callbacks.Callback]]:
    """Early stopping (returned first, when on), the best-model checkpoint and the plateau schedule."""
    mode = "min" if t.monitor.endswith("loss") else "max"
    cbs: list[keras.callbacks.Callback] = []
    early = None
    if t.early_stopping_patience:
        early = keras.callbacks.EarlyStopping(
            monitor=t.monitor, mode=mode, patience=t.early_stopping_patience, restore_best_weights=True
        )
        cbs.append(early)
    if checkpoint_path is not None:
        checkpoint_path = Path(checkpoint_path)
        if checkpoint_path.suffix != ".keras":
            raise ValueError(f"checkpoint_path must end in .keras, got {checkpoint_path}")
        checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        cbs.append(BestCheckpoint(checkpoint_path, monitor=t.monitor, mode=mode, initial_best=initial_best))
    if t.reduce_lr_patience and t.schedule == "plateau":
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=t.monitor, mode=mode, factor=0.5, patience=t.reduce_lr_patience, min_lr=1e-6
            )
        )
    return early, cbs


def _returned_weights(
    model: keras.Model,
    scores: Sequence[float],
    monitor: str,
    early: keras.callbacks.EarlyStopping | None,
    checkpoint_path: str | Path | None,
    initial_epoch: int,
    initial_best: float | None,
    initial_best_epoch: int | None,
) -> int | None:
    """Give ``model`` the weights to return (best, or last without early stopping); return that epoch (1-based)."""
    mode = "min" if monitor.endswith("loss") else "max"
    best_epoch = initial_epoch + int(np.argmax(scores) if mode == "max" else np.argmin(scores)) + 1 if scores else None
    if early is not None and early.best_weights is not None:
        model.set_weights(early.best_weights)
    if initial_best is not None and scores:
        resumed_best = max(scores) if mode == "max" else min(scores)
        if not (resumed_best > initial_best if mode == "max" else resumed_best < initial_best):
            # nothing after the interruption beat the best before it: that model is in the checkpoint
            best_epoch = initial_best_epoch
            if early is not None and checkpoint_path is not None and Path(checkpoint_path).is_file():
                served(model).load_weights(checkpoint_path)
    if early is None and scores:  # without early stopping the last epoch's model is the one returned
        best_epoch = initial_epoch + len(scores)
    return best_epoch

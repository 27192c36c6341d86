"""The typed pipeline configuration: YAML -> pydantic, strict, with errors that name the YAML path.

A pipeline file may start with ``extends: [piece.yaml, ...]`` (paths relative to the file): the
pieces are merged in order, then the file's own keys, then ``--set key.path=value`` overrides.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ecgvgg.core.consensus import CLUSTERS
from ecgvgg.core.rows import reference_channels
from ecgvgg.core.errors import ConfigError
from ecgvgg.core.resampling import SamplerName

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
SAMPLE_PREFIX = "sample:"
RUN_PREFIX = "run:"


def data_path(value: str) -> Path:
    """A table's path as given; ``sample:NAME`` names a sample bundled with the package."""
    if value.startswith(SAMPLE_PREFIX):
        from ecgvgg import sample_path

        return sample_path(value[len(SAMPLE_PREFIX) :])
    return Path(value).expanduser()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


def _unique(names: list[str], what: str) -> list[str]:
    """``names`` when none repeats, else a ValueError naming ``what``."""
    if len(set(names)) != len(names):
        raise ValueError(f"{what} must be unique, got {names}")
    return names


class DataConfig(_Section):
    """Where the beats are and how to read them."""

    #: The beats table: a CSV or Parquet file, a folder or glob of Parquet shards, or ``sample:NAME`` (a sample
    #: bundled with the package).
    path: str = Field(min_length=1)
    #: Labels in a second file (one column, or a column named ``label_column``), row for row with ``path``.
    y_path: str | None = None
    #: ``auto`` (by file suffix), ``csv`` or ``parquet``.
    format: Literal["auto", "csv", "parquet"] = "auto"
    #: Whether a CSV has a header row; ``auto`` detects it; ``false`` is a Kaggle-style CSV with the label
    #: last.
    header: Literal["auto", True, False] = "auto"
    #: Column of the class labels (integers ``0 .. len(class_names) - 1``).
    label_column: str = "label"
    #: Column naming each beat's recording (record, patient, segment): splits keep a group in one part.
    group_column: str | None = None
    #: Names of the classes, in label order (default the AAMI classes).
    class_names: list[str] = Field(default_factory=lambda: ["N", "S", "V", "F", "Q"], min_length=2)
    #: Columns fed to the network's rhythm branch (e.g. ``prepare``'s ``rr_*``), not as beat samples.
    rhythm_columns: list[str] = Field(default_factory=list)
    #: Signal channels of each row, by column prefix (``x`` reads ``x0, x1, ...``): the beat of each
    #: lead, then each lead's reference beat (prefixes starting with ``ref``, as ``ecgvgg prepare
    #: --leads ... --reference ...`` writes them: ``[x, x2_, ref, ref2_]``). The network reads them as
    #: channels of one input and forms each beat minus its reference inside. Empty: every column
    #: that is not rhythm, ignored, label or group is a sample of one channel.
    channels: list[str] = Field(default_factory=list)
    #: Columns that are neither beat samples nor rhythm (``fnmatch`` patterns, e.g. ``sample``, ``rr_*``).
    ignore_columns: list[str] = Field(default_factory=list)
    #: Tables read like ``path`` whose rows are used for training only, never for validation or test.
    extra_train: list[str] = Field(default_factory=list)
    #: Stream the beats from Parquet (a file, a folder of shards or a glob) in record batches instead
    #: of reading the table into memory: for tables larger than memory (see ``ecgvgg.core.stream``).
    stream: bool = False

    @field_validator("rhythm_columns")
    @classmethod
    def _unique_rhythm(cls, names: list[str]) -> list[str]:
        return _unique(names, "rhythm columns")

    @field_validator("channels")
    @classmethod
    def _channel_order(cls, names: list[str]) -> list[str]:
        if not _unique(names, "channels"):
            return names
        refs = [n for n in names if n.startswith("ref")]
        beats = [n for n in names if not n.startswith("ref")]
        if not beats:
            raise ValueError(f"channels {names}: no beat channel (prefixes not starting with ref)")
        if names != beats + refs or len(refs) > len(beats):
            raise ValueError(
                f"channels {names}: list the beat channels first, then at most one reference "
                "channel (ref...) per beat channel, in the same order, e.g. [x, x2_, ref, ref2_]"
            )
        return names

    @property
    def references(self) -> int:
        """How many of ``channels`` are reference beats (the last ones)."""
        return reference_channels(self.channels)

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, names: list[str]) -> list[str]:
        return _unique(names, "class names")

    @property
    def classes(self) -> list[int]:
        """The class labels, ``0 .. len(class_names) - 1``."""
        return list(range(len(self.class_names)))

    def resolved_path(self, which: str = "path") -> Path:
        """The data file as a path; ``sample:NAME`` names a sample bundled with the package."""
        return data_path(getattr(self, which))


class SplitConfig(_Section):
    """Train/validation/test fractions of all rows; grouped by ``data.group_column`` when set."""

    #: Share of all rows (of all groups, when grouped) in the test part.
    test_size: float = Field(0.2, gt=0, lt=1)
    #: Share of all rows in the validation part.
    val_size: float = Field(0.1, gt=0, lt=1)
    #: Seed of the split (and of the folds).
    seed: int = 0
    #: Keep each ``data.group_column`` value in one part (needs ``data.group_column``).
    grouped: bool = True
    #: ``stratified``: random grouped split; ``de_chazal``: train on DS1 records, test on DS2
    #: (``data.group_column`` must hold MIT-BIH record numbers), validation carved from DS1 by record.
    protocol: Literal["stratified", "de_chazal"] = "stratified"
    #: ``K``: stratified (grouped) K-fold cross-validation instead of one split; each fold's test
    #: part is one fold, validation (``val_size`` of all rows) is carved by group from the rest.
    folds: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _sizes(self) -> SplitConfig:
        if self.test_size + self.val_size >= 1:
            raise ValueError(f"test_size + val_size must be < 1, got {self.test_size} + {self.val_size}")
        if self.folds is not None and self.protocol == "de_chazal":
            raise ValueError("folds cannot be combined with protocol de_chazal (its test set is fixed: DS2)")
        return self


class ResamplingConfig(_Section):
    """Oversampling of the training split only."""

    #: How the training part is balanced: ``adasyn``, ``smote``, ``random`` (imbalanced-learn oversamplers),
    #: ``balanced`` (class-balanced batches, no copies) or ``none``.
    sampler: SamplerName = "adasyn"
    #: Keyword arguments of the sampler (e.g. ``n_neighbors``, ``sampling_strategy``; ``proportions`` for
    #: ``balanced``).
    params: dict[str, Any] = Field(default_factory=dict)
    #: Class-balanced epochs: each epoch draws at most this many training rows of every class,
    #: afresh (so over the epochs every row of a large class is seen); null uses every row every
    #: epoch. Validation and test are untouched.
    max_per_class: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _params_fit_sampler(self) -> ResamplingConfig:
        from ecgvgg.core.resampling import make_sampler

        make_sampler(self.sampler, **self.params)  # raises ValueError naming the bad parameter
        if self.sampler == "balanced" and self.max_per_class is not None:
            raise ValueError("max_per_class: not with sampler 'balanced', which already draws class-balanced batches")
        return self


class InputConfig(_Section):
    """How a beat becomes a network input: ``1d`` (length x 1) or ``2d`` (an image)."""

    #: ``1d``: beats as ``(samples, channels)``; ``2d``: beats as images.
    kind: Literal["1d", "2d"] = "1d"
    #: 2D only: ``fold`` (the beat folded row by row into a square) or ``gaf`` (Gramian angular field).
    method: Literal["fold", "gaf"] = "fold"
    #: 2D only: the image side (default: the smallest square that holds the beat, or 64 for ``gaf``).
    size: int | None = Field(None, gt=0)


class ModelConfig(_Section):
    """Knobs of :func:`ecgvgg.core.models.vgg16`."""

    #: Filter multiplier of the convolution blocks (1.0: VGG16's 64-512 filters; 0.25: a quarter).
    width: float = Field(1.0, gt=0, le=4)
    #: Units of ``fc1`` and ``fc2``.
    dense_units: int = Field(4096, gt=0)
    #: Dropout after ``fc1`` and ``fc2``.
    dropout: float = Field(0.0, ge=0, lt=1)
    #: Batch normalisation after each convolution.
    batch_norm: bool = False
    #: A weights file of the same architecture, or ``run:RUN_ID``: start from the network a run
    #: logged (its architecture; the input contract must match the data and ``input``).
    weights: str | None = None
    #: Rebuild the ``predictions`` layer for ``data.class_names`` (e.g. 2 classes from a 5-class run).
    new_head: bool = False
    #: Freeze convolution blocks 1..N (their batch normalisation runs in inference mode).
    frozen_blocks: int = Field(0, ge=0, le=5)

    @field_validator("weights")
    @classmethod
    def _weights_file(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(RUN_PREFIX):
            if not value[len(RUN_PREFIX) :].strip():
                raise ValueError("run: needs a run id, e.g. run:0123abcd...")
            return value
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"no such weights file: {value}")
        return value


class TrainingConfig(_Section):
    """Keras training settings."""

    #: Most epochs to train.
    epochs: int = Field(30, gt=0)
    #: Rows per training batch.
    batch_size: int = Field(256, gt=0)
    #: Batches in an epoch of the ``balanced`` sampler (default: training rows / batch size, rounded up).
    steps_per_epoch: int | None = Field(None, gt=0)
    #: Initial learning rate.
    learning_rate: float = Field(0.001, gt=0)
    #: ``records``: balanced weights scaled by how many records a class comes from (its effective
    #: number of records, ``exp`` of the entropy of its beats over records, relative to the most
    #: widespread class), so that a class seen in one patient cannot take over the beats of new ones.
    class_weight: Literal["auto", "balanced", "records", "none"] | dict[int, float] = "auto"
    #: Cap on a computed (balanced) class weight, so that a class of a handful of rows cannot dominate.
    max_class_weight: float | None = Field(None, gt=0)
    #: What early stopping, the best-model checkpoint and the learning-rate schedule watch.
    monitor: Literal["val_macro_f1", "val_loss", "val_accuracy"] = "val_macro_f1"
    #: Epochs without improvement of ``monitor`` before training stops; 0 or null: never.
    early_stopping_patience: int | None = Field(8, ge=0)
    #: ``plateau`` schedule: epochs without improvement before the rate is halved.
    reduce_lr_patience: int | None = Field(3, ge=0)
    #: Epochs in a row that a collapse must last before it is reported during training.
    collapse_patience: int = Field(3, gt=0)
    #: Share of held-out rows predicted as one class that counts as a collapse.
    collapse_dominance: float = Field(0.98, gt=0.5, le=1)
    #: First epochs during which no collapse is reported.
    collapse_warmup: int = Field(5, ge=0)
    #: A class with fewer held-out rows than this that is never predicted is reported as missed,
    #: not as a collapse (e.g. the 8 Q beats of MIT-BIH DS1).
    collapse_min_rows: int = Field(1, ge=1)
    #: Stop training when the model collapses (the run still logs and exits with status 3).
    stop_on_collapse: bool = False
    #: Training-beat augmentation (ecgvgg.core.augment): amplitude x U(1 +- scale), Gaussian noise sd;
    #: for 1D input also a shift of up to N samples, a time stretch x U(1 +- stretch) and a
    #: baseline wander of amplitude up to ``augment_wander`` (not applied to 2D input, with a
    #: warning); mixup with Beta(alpha, alpha).
    augment_scale: float = Field(0.0, ge=0, lt=1)
    #: Training-beat augmentation: standard deviation of added Gaussian noise.
    augment_noise: float = Field(0.0, ge=0)
    #: Training-beat augmentation (1D): largest shift in samples, left or right.
    augment_shift: int = Field(0, ge=0)
    #: Training-beat augmentation (1D): time stretch factor drawn from U(1 - stretch, 1 + stretch).
    augment_stretch: float = Field(0.0, ge=0, lt=0.5)
    #: Training-beat augmentation (1D): amplitude of a slow baseline wander.
    augment_wander: float = Field(0.0, ge=0)
    #: Mixup: blend beats and labels with a weight drawn from Beta(mixup, mixup); 0: off.
    mixup: float = Field(0.0, ge=0)
    #: After training, add ``prior_shift * log(share of the class)`` to each class's output bias, the shares
    #: being those of the training rows before any capping or oversampling: a network trained on balanced
    #: epochs then calls a beat abnormal only with more evidence, as the classes' real frequencies ask
    #: (0: none; 1: the full Bayes correction to the real frequencies).
    prior_shift: float = Field(0.0, ge=0, le=1)
    #: Subject-invariant training: weight of the loss of a head that tells a training beat's record from
    #: the network's ``fc2`` features, behind a gradient-reversal layer, so that the network learns
    #: features that do not tell patients apart (training only; needs ``data.group_column``; 0: off).
    subject_adversary: float = Field(0.0, ge=0)
    #: ``cross_entropy`` or ``focal`` (focusing parameter ``focal_gamma``), with optional label smoothing.
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    #: Label smoothing of the loss.
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    #: Focusing parameter of the ``focal`` loss.
    focal_gamma: float = Field(2.0, ge=0)
    #: ``adam`` or ``adamw`` (decoupled ``weight_decay``).
    optimizer: Literal["adam", "adamw"] = "adam"
    #: Decoupled weight decay of ``adamw``.
    weight_decay: float = Field(1e-4, ge=0)
    #: ``plateau``: halve the rate when ``monitor`` stalls (``reduce_lr_patience``); ``cosine``:
    #: cosine decay over ``epochs`` after ``warmup_epochs`` of linear warm-up.
    schedule: Literal["plateau", "cosine"] = "plateau"
    #: ``cosine`` schedule: epochs of linear warm-up.
    warmup_epochs: int = Field(0, ge=0)
    #: Repeatable training (TensorFlow's deterministic ops and seeds; slower).
    deterministic: bool = False
    #: float16 computation on a GPU (``auto``: when one is there).
    mixed_precision: Literal["auto", True, False] = "auto"
    #: Seed of weight initialisation, shuffling, augmentation and the baseline.
    seed: int = 0
    #: Fine-tuning in two phases: train with ``model.frozen_blocks`` frozen for this many epochs,
    #: then unfreeze everything and go on at ``fine_tune_learning_rate``.
    unfreeze_after: int | None = Field(None, gt=0)
    #: Learning rate of the second phase (default: a tenth of ``learning_rate``).
    fine_tune_learning_rate: float | None = Field(None, gt=0)


class TrackingConfig(_Section):
    """MLflow experiment and store; ``uri`` null means ``$MLFLOW_TRACKING_URI`` or ./mlruns (SQLite)."""

    #: MLflow experiment of the runs.
    experiment: str = Field("ecgvgg", min_length=1)
    #: MLflow store; null: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns/mlflow.db``.
    uri: str | None = None
    #: Name of the run (default: sampler, model and width, and a short id).
    run_name: str | None = None
    #: Test beats per predicted class whose Grad-CAM the run logs as ``explain/gradcam_<class>.png``; 0: none.
    gradcam_per_class: int = Field(200, ge=0)

    def resolved_uri(self) -> str:
        """The tracking URI in force: the config's, else ``$MLFLOW_TRACKING_URI``, else ./mlruns/mlflow.db."""
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class PipelineConfig(_Section):
    """A whole study: data -> split -> resampling -> input -> model -> training -> tracking."""

    data: DataConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    resampling: ResamplingConfig = Field(default_factory=ResamplingConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    #: ``rf``: also fit a random forest (300 trees, balanced class weights) on the same training
    #: rows before oversampling and score it on the same test rows; ``none`` skips it.
    #: ``auto``: a gradient-boosted tree (``hgb``) when the rows have rhythm columns or reference
    #: channels, else ``rf``. ``hgb``: scikit-learn's HistGradientBoostingClassifier on the rhythm
    #: columns, the beats, each beat minus its reference and how each beat differs from its reference
    #: (``baselines.template_measures``), balanced class weights.
    baseline: Literal["auto", "rf", "hgb", "none"] = "auto"
    #: ``training``: the boosted tree weighs the classes as ``training.class_weight`` and
    #: ``training.max_class_weight`` weigh them for the network (by records, capped); ``balanced``
    #: (default): scikit-learn's balanced weights.
    baseline_class_weight: Literal["balanced", "training"] = "balanced"
    #: Blend the baseline into the model: it predicts ``(1 - w) x network + w x baseline`` class
    #: probabilities (0: the network alone). The fitted baseline is saved inside the model file, so
    #: evaluate, predict, annotate and the served model blend as the run scored.
    baseline_blend: float = Field(0.0, ge=0, lt=1)
    #: Record consensus (``ecgvgg.core.consensus``): within each record, beats of one shape and rhythm
    #: (k-means clusters, no labels) move their class probabilities by this weight towards their
    #: cluster's mean (0: each beat alone). Needs ``data.group_column``; saved with the model, so
    #: evaluate, predict (given the group column) and annotate answer as the run scored.
    record_consensus: float = Field(0.0, ge=0, lt=1)
    #: At most this many clusters per record for ``record_consensus`` (fewer in short records).
    record_clusters: int = Field(CLUSTERS, ge=2)
    #: Record adaptation (``ecgvgg.core.adaptation``): within each record, each batch-normalisation
    #: layer's statistics move by this share of how the record's inputs to it differ from a sample of the
    #: training rows' (0: as trained). No labels; needs ``data.group_column`` and ``model.batch_norm``;
    #: saved with the model, so evaluate, predict (given the group column) and annotate answer as the
    #: run scored.
    record_adaptation: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _phases(self) -> PipelineConfig:
        t = self.training
        if t.unfreeze_after is not None:
            if not self.model.frozen_blocks:
                raise ValueError("training.unfreeze_after: needs model.frozen_blocks > 0 (nothing is frozen)")
            if t.unfreeze_after >= t.epochs:
                raise ValueError(f"training.unfreeze_after: {t.unfreeze_after} must be < training.epochs ({t.epochs})")
        return self

    @model_validator(mode="after")
    def _schedule_fits(self) -> PipelineConfig:
        t = self.training
        if t.schedule == "cosine" and t.warmup_epochs >= t.epochs:
            raise ValueError(f"training.warmup_epochs: {t.warmup_epochs} must be < training.epochs ({t.epochs})")
        return self

    @model_validator(mode="after")
    def _rhythm_fits(self) -> PipelineConfig:
        if self.data.rhythm_columns and self.input.kind != "1d":
            raise ValueError("data.rhythm_columns: the rhythm branch needs input.kind 1d")
        if len(self.data.channels) > 1 and self.input.kind != "1d":
            raise ValueError("data.channels: several channels need input.kind 1d")
        return self

    @model_validator(mode="after")
    def _steps_fit(self) -> PipelineConfig:
        if self.training.steps_per_epoch is not None and self.resampling.sampler != "balanced":
            raise ValueError(
                "training.steps_per_epoch: needs resampling.sampler: balanced, which draws batches "
                "without end (other epochs are one pass over the training rows)"
            )
        return self

    @model_validator(mode="after")
    def _stream_fits(self) -> PipelineConfig:
        if not self.data.stream:
            return self
        r = self.resampling.sampler
        if r not in ("none", "balanced"):
            raise ValueError(
                f"resampling.sampler: {r} needs the whole training table in memory; with data.stream "
                "use resampling.sampler: balanced (class-balanced batches drawn from per-class streams)"
            )
        refused = {
            "split.folds": self.split.folds is not None,
            "data.extra_train": bool(self.data.extra_train),
            "data.y_path": self.data.y_path is not None,
            "data.format": self.data.format == "csv",
            "resampling.max_per_class": self.resampling.max_per_class is not None,
        }
        for key, bad in refused.items():
            if bad:
                raise ValueError(
                    f"{key}: not available with data.stream (streamed data is one Parquet table, "
                    "a file or shards, with one split); set data.stream: false"
                )
        return self

    @model_validator(mode="after")
    def _records_known(self) -> PipelineConfig:
        t = self.training
        for key, on in (
            ("training.class_weight: records", t.class_weight == "records"),
            ("training.subject_adversary:", bool(t.subject_adversary)),
            ("record_consensus:", bool(self.record_consensus)),
            ("record_adaptation:", bool(self.record_adaptation)),
        ):
            if on and not self.data.group_column:
                raise ValueError(f"{key} needs data.group_column (the record of each row)")
        if t.subject_adversary and (self.data.stream or t.mixup):
            key = "data.stream" if self.data.stream else "training.mixup"
            raise ValueError(f"training.subject_adversary: not available with {key} (set one of them to 0/false)")
        if self.record_consensus and self.data.stream:
            raise ValueError("record_consensus: not available with data.stream (set record_consensus to 0)")
        if self.record_adaptation:
            for key, on in (
                ("data.stream", self.data.stream),
                ("split.folds", self.split.folds is not None),
                ("model.batch_norm: false", not self.model.batch_norm),
            ):
                if on:
                    raise ValueError(f"record_adaptation: not available with {key} (set record_adaptation to 0)")
        return self

    @model_validator(mode="after")
    def _blend_has_a_baseline(self) -> PipelineConfig:
        if self.baseline_blend:
            if self.baseline_kind == "none":
                raise ValueError("baseline_blend: needs a baseline to blend (baseline is none)")
            for key, on in (("data.stream", self.data.stream), ("split.folds", self.split.folds)):
                if on:
                    raise ValueError(f"baseline_blend: not available with {key} (set baseline_blend to 0)")
        return self

    @property
    def baseline_kind(self) -> str:
        """The baseline in force: ``auto`` resolved to ``hgb`` (rhythm or reference columns) or ``rf``."""
        if self.baseline != "auto":
            return self.baseline
        return "hgb" if self.data.rhythm_columns or self.data.references else "rf"

    @property
    def grouped_split(self) -> bool:
        """Whether the split keeps groups together (``split.grouped``, or de Chazal's record protocol)."""
        return self.split.grouped or self.split.protocol == "de_chazal"

    def time_axis_augmentation(self) -> list[str]:
        """The time-axis augmentation keys in force (they act on 1D input only)."""
        t = self.training
        return [f"training.{k}" for k in ("augment_shift", "augment_stretch", "augment_wander") if getattr(t, k)]

    @model_validator(mode="after")
    def _fits_classes(self) -> PipelineConfig:
        weights = self.training.class_weight
        if isinstance(weights, dict):
            classes = set(range(len(self.data.class_names)))
            if set(weights) != classes:
                unknown, missing = sorted(set(weights) - classes), sorted(classes - set(weights))
                raise ValueError(
                    f"training.class_weight: the keys must be the classes 0..{len(classes) - 1} "
                    f"({', '.join(self.data.class_names)})"
                    + (f"; {unknown} are not classes" if unknown else "")
                    + (f"; {missing} have no weight" if missing else "")
                )
            bad = {c: w for c, w in weights.items() if not w > 0}
            if bad:
                raise ValueError(f"training.class_weight: weights must be > 0, got {bad}")
        return self

    def flat(self) -> dict[str, Any]:
        """Every resolved value as ``section.key`` -> value (for MLflow params)."""
        return _flatten(self.model_dump(mode="json"))


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read a pipeline YAML (with its ``extends`` pieces) and ``key.path=value`` overrides, then validate."""
    raw = _read_yaml_tree(Path(path), seen=())
    given: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        set_path(raw, key.strip(), parse_yaml(value, f"--set {item}") if value.strip() else None)
        given[key.strip()] = item
    return validate_config(raw, source=str(path), overrides=given)


def override(base: PipelineConfig, values: Mapping[str, Any], source: str = "<override>") -> PipelineConfig:
    """``base`` with ``key.path = value`` set for each of ``values``, validated (a sweep's combination, a trial)."""
    raw = base.model_dump(mode="json")
    for key, value in values.items():
        set_path(raw, key, value, option=source)
    return validate_config(raw, source=source)


def validate_config(
    raw: dict[str, Any],
    source: str = "<config>",
    overrides: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Validate a plain dict as a :class:`PipelineConfig`, raising ConfigError with YAML paths; an error in a key
    that ``overrides`` set (key path -> the ``--set`` item) names that ``--set`` instead of the file."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        problems, from_file = [], False
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-after", "literal[", "dict[")))
            item = next((v for k, v in (overrides or {}).items() if loc and (loc == k or loc.startswith(k + "."))), None)
            problems.append(f"--set {item}: {_describe(e)}" if item else _describe(e))
            from_file = from_file or item is None
        raise ConfigError((f"{source}: " if from_file else "") + "; ".join(problems)) from None


def _describe(err: Any) -> str:
    """One pydantic error as ``yaml.path: problem (got value)``."""
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-after", "literal[", "dict[")))
    if not loc:  # a check across sections: its message names the keys
        return err["msg"].replace("Value error, ", "")
    if err["type"] == "extra_forbidden":
        parent = PipelineConfig
        for part in err["loc"][:-1]:
            field = parent.model_fields.get(str(part))
            parent = field.annotation if field is not None else None  # type: ignore[assignment]
            if parent is None:
                break
        allowed = ", ".join(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else ""
        return f"{loc}: unknown key" + (f" (allowed: {allowed})" if allowed else "")
    if err["type"] == "missing":
        return f"{loc}: required"
    msg = err["msg"].replace("Value error, ", "")
    return f"{loc}: {msg} (got {err.get('input')!r})"


def _read_yaml_tree(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """Read ``path`` and merge the pieces it ``extends`` under it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a pipeline is a YAML text file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    raw = parse_yaml(text, str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    pieces = raw.pop("extends", []) or []
    if isinstance(pieces, str):
        pieces = [pieces]
    if not isinstance(pieces, list) or not all(isinstance(piece, str) and piece for piece in pieces):
        raise ConfigError(f"{path}: extends: expected a list of YAML file paths, got {pieces!r}")
    merged: dict[str, Any] = {}
    for piece in pieces:
        merged = _merge(merged, _read_yaml_tree(_extends_path(path, piece), seen + (path,)))
    return _merge(merged, raw)


#: The ``configs/`` folder of an ecgvgg checkout, where the shipped pipelines' pieces live.
SHIPPED_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _extends_path(path: Path, piece: str) -> Path:
    """Where an ``extends`` piece is: relative to the YAML file, else the shipped ``configs/`` piece of that name."""
    candidate = path.parent / piece
    if candidate.is_file():
        return candidate
    parts = Path(piece).parts
    if "configs" in parts:
        shipped = SHIPPED_CONFIGS.joinpath(*parts[parts.index("configs") + 1 :])
        if shipped.is_file():
            return shipped
    raise ConfigError(
        f"{path}: extends: {piece}: no such file (extends paths are relative to the YAML file's "
        f"folder, {path.parent}; pieces under configs/ are also found in {SHIPPED_CONFIGS})"
    )


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML with the safe loader; a syntax error becomes one ConfigError line naming ``where`` and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def set_path(raw: dict[str, Any], key: str, value: Any, option: str = "--set") -> None:
    """Set ``section.key`` in a raw config dict (validation later names unknown keys)."""
    keys = key.split(".")
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{option} {key}: {k} is not a section")
    node[keys[-1]] = value


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out

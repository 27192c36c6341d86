"""MLflow as an observer of the study: every parent and child run is opened here, and everything logged.

:class:`MlflowObserver` follows one study (a run, or a parent with a child run per fold);
:func:`search_run` is the parent run of a sweep or a tuning study. Runs end FINISHED only when
their block completes; FAILED on an error, KILLED on an interrupt. MLflow's tracking URI is set
only while these runs are open, and restored after.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from ecgvgg.tracking import store
from ecgvgg.core.baselines import comparison
from ecgvgg.core.config import PipelineConfig
from ecgvgg.core.data import class_counts
from ecgvgg.core.dataset import StudyData, split_kind
from ecgvgg.core.distributed import worker_count
from ecgvgg.core.errors import ConfigError
from ecgvgg.core.folds import Fold
from ecgvgg.core.metrics import flat_scores
from ecgvgg.core.resampling import Splits
from ecgvgg.tracking.store import param_text
from ecgvgg.core.events import Observer
from ecgvgg.core.results import FoldResult, ResumePoint, StudyResult

log = logging.getLogger("ecgvgg")


@contextmanager
def _run(
    experiment_id: str,
    run_name: str | None = None,
    run_id: str | None = None,
    nested: bool = False,
    lock: bool = True,
    uri: str = "",
) -> Iterator[Any]:
    """An MLflow run that ends FINISHED only when the block completes; FAILED on any error, KILLED on an interrupt.

    With ``lock`` the run's lock (see :func:`ecgvgg.tracking.store.run_lock`) is held while the block runs,
    so other processes can tell this live run from one whose process died.
    """
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, run_id=run_id, nested=nested)
    stack = ExitStack()
    try:
        if lock:
            stack.enter_context(store.run_lock(uri, run.info.run_id))
        yield run
    except KeyboardInterrupt:
        mlflow.set_tag("ecgvgg.status", "interrupted")
        mlflow.end_run(status="KILLED")
        raise
    except BaseException as exc:
        mlflow.set_tag("ecgvgg.error", f"{type(exc).__name__}: {exc}"[:5000])
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")
    finally:
        stack.close()


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


class MlflowObserver(Observer):
    """Logs a study to MLflow: one run, or with several folds a parent run and a child run per fold.

    Use it as a context manager around :func:`ecgvgg.core.study.run_study`. ``nested`` makes the
    study's run a child of the active (sweep or tuning) run; ``resume_run_id`` reopens an
    interrupted run, whose :attr:`resume` point is known on entering. After the study,
    :attr:`run_id`, :attr:`run_name`, :attr:`model_uri` and :attr:`model_path` describe its
    (top) run; ``on_run`` hears the id of each run as it opens.
    """

    def __init__(
        self,
        cfg: PipelineConfig,
        *,
        nested: bool = False,
        resume_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        on_run: Callable[[str], None] | None = None,
    ):
        self.cfg, self.nested, self.resume_run_id, self.tags = cfg, nested, resume_run_id, dict(tags or {})
        self.on_run = on_run
        self.uri = cfg.tracking.resolved_uri()
        self.resume: ResumePoint | None = None
        self.run_id: str | None = None
        self.run_name = ""
        self.model_uri, self.model_path = "", Path()
        self._stack, self._fold = ExitStack(), ExitStack()
        self._parent: Any = None
        self._dataset: pd.DataFrame | None = None
        self._X: np.ndarray | None = None

    def __enter__(self) -> MlflowObserver:
        with ExitStack() as opening:  # a refused resume leaves nothing entered
            opening.enter_context(store.using(self.uri))
            self.experiment_id = store.experiment_id(self.uri, self.cfg.tracking.experiment)
            if self.resume_run_id:  # hold the run's lock first: a live run is refused, a dead one is ours
                if not store.run_exists(self.uri, self.resume_run_id):
                    raise ConfigError(f"--resume {self.resume_run_id}: no such run in {self.uri}")
                opening.enter_context(store.run_lock(self.uri, self.resume_run_id))
                self.resume = store.resume_point(self.uri, self.resume_run_id, self.cfg.flat(), self.cfg.training.monitor)
            self._stack = opening.pop_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        """End the open runs: FINISHED, or FAILED / KILLED with the error or interrupt that ends the study."""
        try:
            self._fold.__exit__(*exc)
        except BaseException:  # the fold's run re-raised it: the parent run ends the same way
            self._stack.__exit__(*sys.exc_info())
            raise
        self._stack.__exit__(*exc)

    def _open(self, name: str | None, *, parent: bool = False, run_id: str | None = None, lock: bool = True) -> Any:
        """Open a run: the parent (held until the study ends) or a fold's (held until the fold ends)."""
        nested = self.nested or (self._parent is not None and not parent)
        holder = self._stack if parent else self._fold
        run = holder.enter_context(_run(self.experiment_id, name, run_id=run_id, nested=nested, lock=lock, uri=self.uri))
        if self.on_run is not None:
            self.on_run(run.info.run_id)
        if self.run_id is None:
            self.run_id, self.run_name = run.info.run_id, run.info.run_name
        return run

    def study_started(self, cfg: PipelineConfig, data: StudyData, folds: Sequence[Fold]) -> None:
        """With several folds: open the parent run and log the setup."""
        self._dataset, self._data = _dataset_frame(data, cfg), data
        if len(folds) > 1:
            self._parent = self._open(run_name(cfg, nested=self.nested), parent=True)
            log.info(
                "MLflow run %s (%s) started (%d-fold cross-validation)",
                self._parent.info.run_id,
                self._parent.info.run_name,
                len(folds),
            )
            _log_setup(cfg, {"all": class_counts(data.y, cfg.data.classes)}, self._dataset, cv="true", **self.tags)

    def fold_started(self, k: int, cfg: PipelineConfig, data: StudyData, splits: Splits) -> Path:
        """Open the fold's run (or reopen the resumed one), log its setup; its folder holds the checkpoint."""
        if self._parent is not None:
            run = self._open(f"{self._parent.info.run_name}-fold{k}")
            _log_setup(cfg, splits.counts, self._dataset, fold=str(k))
        elif self.resume is not None:
            run = self._open(None, run_id=self.resume_run_id, lock=False)
            store.clear_interrupted(self.uri, run.info.run_id)
        else:
            run = self._open(run_name(cfg, nested=self.nested))
            _log_setup(cfg, splits.counts, self._dataset, **self.tags)
        if self._parent is None:
            log.info("MLflow run %s (%s) %s", run.info.run_id, run.info.run_name, "resumed" if self.resume else "started")
        return store.local_run_dir(self.uri, run.info.run_id)

    def epoch_ended(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Log the epoch's metrics (step = epoch number, 1-based)."""
        log_epoch(epoch, logs)

    def fold_ended(self, k: int, result: FoldResult) -> None:
        """Log the fold's training, validation and test results and its model, then end its run."""
        if result.pruned:
            mlflow.set_tag("pruned", "true")
        else:
            self.model_uri, self.model_path = _log_fold(self.cfg, result, self.uri, mlflow.active_run(), self._data)
        self._fold.close()

    def study_ended(self, result: StudyResult) -> None:
        """With several folds: log the pooled out-of-fold results and the fold ensemble, then end the parent run."""
        if self._parent is None:
            return
        if result.pruned:
            mlflow.set_tag("pruned", "true")
        else:
            self.model_uri, self.model_path = _log_pooled(self.cfg, result, self.uri, self._parent.info.run_id, self._data)
        self._stack.close()


def _dataset_frame(data: StudyData, cfg: PipelineConfig) -> pd.DataFrame:
    """The table as MLflow's dataset input sees it: features, ``label`` and the group column; of streamed data,
    ``label`` and the groups' codes (the positions of their names, sorted), since MLflow reads every value of a
    text column into a Python object to infer its type."""
    frame = pd.DataFrame({"label": data.y}) if data.streamed else data.table.rename(columns=str).assign(label=data.y)
    if data.groups is not None and cfg.data.group_column:
        frame[cfg.data.group_column] = data.groups if data.streamed else data.named_groups()
    return frame


def _log_setup(
    cfg: PipelineConfig, counts: Mapping[str, Mapping[int, int]], dataset: pd.DataFrame | None = None, **tags: str
) -> None:
    """Tags, params, class counts, the dataset input and provenance of a new run."""
    mlflow.set_tags(
        {
            "baseline": cfg.baseline_kind,
            "sampler": cfg.resampling.sampler,
            "model": f"vgg16_{cfg.input.kind}",
            "input": cfg.input.kind if cfg.input.kind == "1d" else f"2d-{cfg.input.method}",
            "split_kind": split_kind(cfg),
            "collapsed": "unknown",
            **tags,
        }
    )
    log_params({**cfg.flat(), "workers": worker_count()})
    log_counts(counts, list(cfg.data.class_names))
    if dataset is not None:
        log_provenance(dataset, cfg.data.resolved_path())


def _log_fold(cfg: PipelineConfig, r: FoldResult, uri: str, run: Any, data: StudyData) -> tuple[str, Path]:
    """Everything a trained fold logs in its run; returns the logged model's URI and its local copy."""
    assert r.ci is not None and r.y_val is not None and r.val_pred is not None  # set by training and scoring
    from ecgvgg.core.figures import training_curves_figure
    from ecgvgg.core.metrics import confusion
    from ecgvgg.core.models import trainable_count

    names, classes, fit = list(cfg.data.class_names), list(cfg.data.classes), r.fit
    if r.unfrozen_at is not None:
        mlflow.log_metric("unfrozen_at_epoch", r.unfrozen_at)
    if fit.class_weight:
        mlflow.log_params({f"class_weight_{names[c]}": round(w, 6) for c, w in fit.class_weight.items()})
    trainable = trainable_count(r.model)  # what trained last: after a second phase, everything
    mlflow.log_metrics(
        {
            "epochs_run": fit.epochs_run,
            "best_epoch": fit.best_epoch or 0,
            "training_seconds": round(r.seconds, 2),
            "params_total": r.model.count_params(),
            "params_trainable": trainable,
            "params_non_trainable": r.model.count_params() - trainable,
        }
    )
    title = run.info.run_name
    mlflow.log_figure(
        training_curves_figure(fit.history, names, f"{title}: training", first_epoch=r.first_epoch), "training_curves.png"
    )
    log_confusion(confusion(r.y_val, r.val_pred, classes), names, "val", f"{title}: validation")
    # the returned model's validation scores (the per-epoch val_* history ends at the last epoch)
    mlflow.log_metrics(flat_scores(r.val_scores, names, "model_val"))
    _log_scores(r.scores, names, "test", f"{title}: test")
    mlflow.log_metrics({"test_macro_f1_ci_low": r.ci[0], "test_macro_f1_ci_high": r.ci[1]})
    if r.baseline_macro_f1 is not None:
        mlflow.log_metric(f"baseline_{cfg.baseline_kind}_macro_f1", r.baseline_macro_f1)
    _log_verdict(r.reason, r.missed)
    log_saliency(r.saliency, title)
    describe_run(
        r.scores,
        names,
        r.reason,
        r.missed,
        r.ci,
        r.baseline_macro_f1,
        split_kind(cfg),
        baseline_kind=cfg.baseline_kind,
        blend=cfg.baseline_blend,
        consensus=cfg.record_consensus,
        adaptation=cfg.record_adaptation,
    )
    folder = store.local_run_dir(uri, run.info.run_id)
    return _log_model(r.model, r.contract, folder, data.rows(r.fold.test[:5]), baseline=r.baseline)


def _log_pooled(
    cfg: PipelineConfig,
    result: StudyResult,
    uri: str,
    run_id: str,
    data: StudyData,
) -> tuple[str, Path]:
    """The parent run of a cross-validation: out-of-fold scores and predictions, the verdict, the fold ensemble."""
    names, oof, parent = result.class_names, result.oof, mlflow.active_run()
    assert result.ci is not None and result.cv is not None and oof is not None and parent is not None
    _log_scores(result.scores, names, "oof")
    mlflow.log_metrics({"oof_macro_f1_ci_low": result.ci[0], "oof_macro_f1_ci_high": result.ci[1], **result.cv["metrics"]})
    if result.baseline_macro_f1 is not None:
        mlflow.log_metric(f"baseline_{cfg.baseline_kind}_macro_f1", result.baseline_macro_f1)
    _log_oof_predictions(oof, cfg)
    _log_verdict(result.reason, result.missed)
    log_saliency(result.saliency, f"{parent.info.run_name} (out-of-fold)")
    model = result.ensemble
    logged = _log_model(model, result.contract, store.local_run_dir(uri, run_id), data.rows(np.arange(5)))
    # one fold's network, as a single run would report it; the epochs a fold trained, on average
    net = result.folds[0].model
    trainable = sum(int(np.prod(w.shape)) for w in net.trainable_weights)
    mlflow.log_metrics(
        {
            "params_total": net.count_params(),
            "params_trainable": trainable,
            "params_non_trainable": net.count_params() - trainable,
            "training_seconds": round(result.seconds, 2),
            "epochs_run": round(float(np.mean([f.fit.epochs_run for f in result.folds])), 1),
            "folds": len(result.folds),
        }
    )
    describe_run(
        result.scores,
        names,
        result.reason,
        result.missed,
        result.ci,
        result.baseline_macro_f1,
        result.kind,
        result.cv,
        baseline_kind=cfg.baseline_kind,
        consensus=cfg.record_consensus,
    )
    return logged


def _log_model(model: Any, contract: Any, folder: Path, example_rows: np.ndarray, baseline: Any = None) -> tuple[str, Path]:
    """Save the model with its contract (and a blended model's baseline) in the run folder and log it as the
    run's pyfunc model (with 5 rows of the table as its input example)."""
    from ecgvgg.core.inference import save_model
    from ecgvgg.tracking.serving import log_beat_model

    path = save_model(model, folder / "model.keras", contract, baseline)
    example = pd.DataFrame(example_rows[:5], columns=contract.features)
    return log_beat_model(path, example, contract), path


def _log_scores(scores: Mapping[str, Any], names: Sequence[str], prefix: str, title: str | None = None) -> None:
    """Final scores, AAMI EC57 metrics, the confusion matrix and the classification report with ``prefix``."""
    from ecgvgg.core.metrics import report_text

    log_evaluation(scores, np.asarray(scores["confusion_matrix"]), report_text(scores, names), names, prefix=prefix, title=title)


def _log_verdict(reason: str | None, missed: Mapping[str, str]) -> None:
    """Tags ``collapsed``, ``collapse_reason`` and ``missed_classes`` (empty when none)."""
    mlflow.set_tags(
        {"collapsed": "true" if reason else "false", "collapse_reason": reason or "", "missed_classes": ",".join(missed)}
    )


def _log_oof_predictions(oof: Mapping[str, Any], cfg: PipelineConfig) -> None:
    """Log ``oof_predictions.parquet``: row, fold, label, prediction, the group and one probability per class."""
    frame = pd.DataFrame(
        {"row": np.arange(len(oof["label"])), "fold": oof["fold"], "label": oof["label"], "prediction": oof["prediction"]}
    )
    if oof["groups"] is not None:
        frame[cfg.data.group_column or "group"] = oof["groups"]
    for i, name in enumerate(cfg.data.class_names):
        frame[f"p_{name}"] = oof["probs"][:, i]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "oof_predictions.parquet"
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path))


def describe_run(
    scores: Mapping[str, Any],
    names: Sequence[str],
    reason: str | None,
    missed: Mapping[str, str],
    ci: tuple[float, float] | None,
    baseline: float | None,
    kind: str,
    cv: Mapping[str, Any] | None = None,
    baseline_kind: str = "rf",
    blend: float = 0.0,
    consensus: float = 0.0,
    adaptation: float = 0.0,
) -> str:
    """Write the run's description (MLflow's note): verdict, macro-F1 with interval, recall per class, baseline."""
    what = "Out-of-fold" if cv else "Test"
    lines = [
        f"**Collapsed: {reason}.**" if reason else "**Not collapsed.**",
        f"{what} macro-F1 **{scores['macro_f1']:.3f}**"
        + (f" (95% bootstrap interval {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
        + f"; split: {kind}.",
    ]
    if cv:
        lines.append(f"Cross-validated macro-F1 {cv['macro_f1'][0]:.3f} ± {cv['macro_f1'][1]:.3f} over {cv['folds']} folds.")
    lines.append("Recall: " + ", ".join(f"{n} {scores['recall'][i]:.3f}" for i, n in enumerate(names)) + ".")
    if baseline is not None:
        lines.append(comparison(baseline_kind, blend, scores["macro_f1"], baseline, consensus, adaptation) + ".")
    if missed:
        lines.append("Missed (recall 0): " + "; ".join(f"{n} on {where}" for n, where in missed.items()) + ".")
    text = "\n\n".join(lines)
    mlflow.set_tag("mlflow.note.content", text)
    return text


class SearchRun:
    """The parent run of a sweep or a tuning study, as :func:`search_run` opens it."""

    def __init__(self, run: Any):
        self.run_id, self.run_name = run.info.run_id, run.info.run_name

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log summary metrics of the search."""
        mlflow.log_metrics(dict(metrics))

    def log_artifact(self, path: Path) -> None:
        """Log a file (the search space, the best configuration)."""
        mlflow.log_artifact(str(path))

    def log_figure(self, figure: Any, name: str) -> None:
        """Log a matplotlib figure (the optimisation history, parameter importances)."""
        mlflow.log_figure(figure, name)


@contextmanager
def search_run(
    cfg: PipelineConfig,
    name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
) -> Iterator[SearchRun]:
    """A parent run for a sweep or tuning study; the studies inside it log child runs (``nested=True``)."""
    uri = cfg.tracking.resolved_uri()
    with store.using(uri):
        experiment = store.experiment_id(uri, cfg.tracking.experiment)
        with _run(experiment, name, uri=uri) as run:
            mlflow.set_tags(dict(tags))
            if params:
                log_params(params)
            yield SearchRun(run)


def log_params(params: Mapping[str, Any]) -> None:
    """Log resolved config values as params (lists and dicts as JSON)."""
    mlflow.log_params({k: param_text(v) for k, v in params.items()})


def log_counts(counts: Mapping[str, Mapping[int, int]], names: Sequence[str]) -> None:
    """Log class counts per split (``count_train_before_N`` ...) as params and as a JSON artifact."""
    mlflow.log_params({f"count_{split}_{names[c]}": n for split, by in counts.items() for c, n in by.items() if c < len(names)})
    mlflow.log_dict(
        {split: {names[c]: n for c, n in by.items() if c < len(names)} for split, by in counts.items()}, "class_counts.json"
    )


def log_epoch(epoch: int, logs: Mapping[str, float]) -> None:
    """Log one epoch's metrics with ``step`` = epoch number (1-based)."""
    mlflow.log_metrics({k: float(v) for k, v in logs.items() if np.isscalar(v)}, step=epoch + 1)  # type: ignore[arg-type]


def log_evaluation(
    scores: Mapping[str, Any],
    matrix: np.ndarray,
    report: str,
    names: Sequence[str],
    prefix: str = "test",
    title: str | None = None,
) -> None:
    """Log final scores, AAMI EC57 metrics, the confusion matrix (PNG and JSON) and the classification report."""
    from ecgvgg.core.metrics import aami_scores, flat_scores

    aami = aami_scores(matrix, names)
    mlflow.log_metrics(flat_scores(scores, names, prefix))
    mlflow.log_metrics(
        {
            f"{prefix}_{key}_{name}": v
            for name, by in aami.items()
            for key, v in (("se", by["Se"]), ("ppv", by["+P"]), ("fpr", by["FPR"]))
        }
    )
    mlflow.log_dict(aami, f"{prefix}_aami_ec57.json")
    if "S" in names and "V" in names:
        from ecgvgg.core.metrics import jk_index

        mlflow.log_metric(f"{prefix}_jk", jk_index(matrix, names)["jk"])
    log_confusion(matrix, names, prefix, title or f"{prefix} confusion matrix")
    mlflow.log_text(report, f"{prefix}_classification_report.txt")


def log_provenance(dataset_frame: Any, source: Path, context: str = "training") -> None:
    """Log the data as an MLflow dataset input (digest, source) and tag the ecgvgg, TensorFlow and Keras versions
    and, when run from a git checkout, its commit."""
    import mlflow.data
    from importlib import metadata as importlib_metadata

    import warnings

    with warnings.catch_warnings():  # MLflow's notices: a local path's source type, integer columns, pandas 4
        warnings.simplefilter("ignore")
        datasets: Any = mlflow.data  # from_pandas is not in its stubs
        dataset = datasets.from_pandas(
            dataset_frame,
            source=str(Path(source).resolve()),
            name=Path(source).name,
            targets="label",
            digest=pandas_digest(dataset_frame),
        )
        mlflow.log_input(dataset, context=context)
    tags = {}
    for package, tag in (("ecgvgg", "ecgvgg.version"), ("tensorflow", "tensorflow.version"), ("keras", "keras.version")):
        try:
            tags[tag] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    mlflow.set_tags(tags)


def pandas_digest(frame: pd.DataFrame) -> str:
    """MLflow's digest of a pandas dataset (hashes of its first rows, its row count and column names), without
    the pass that MLflow makes over every cell of the table to find its text columns (a Python object per cell)."""
    from mlflow.data.digest_utils import MAX_ROWS, get_normalized_md5_digest

    head = frame.head(MAX_ROWS)
    text = head.columns[head.map(lambda v: type(v) is str).all(0)]
    kept = head[text.union(head.select_dtypes(include=[np.number]).columns)]
    parts = [pd.util.hash_pandas_object(kept).values, np.int64(len(frame)), *(str(c).encode() for c in frame.columns)]
    return get_normalized_md5_digest(parts)


def git_commit() -> str | None:
    """The commit of the git checkout that ecgvgg runs from, or None (an installed package, no git)."""
    import subprocess

    here = Path(__file__).resolve().parent
    if not any((parent / ".git").exists() for parent in (here, *here.parents)):
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def log_saliency(saliency: Any, title: str) -> None:
    """Log ``explain/gradcam_<class>.png``: each predicted class's mean test beat over its mean Grad-CAM saliency."""
    if saliency is None:
        return
    from ecgvgg.core.figures import class_saliency_figures

    for name, figure in class_saliency_figures(saliency, title, "test beats"):
        mlflow.log_figure(figure, f"explain/gradcam_{name}.png")


def log_confusion(matrix: np.ndarray, names: Sequence[str], prefix: str, title: str) -> None:
    """Log a confusion matrix as ``{prefix}_confusion_matrix.png`` and ``.json``."""
    mlflow.log_dict(
        {"labels": list(names), "rows": "true", "columns": "predicted", "matrix": np.asarray(matrix).tolist()},
        f"{prefix}_confusion_matrix.json",
    )
    from ecgvgg.core.figures import confusion_figure

    mlflow.log_figure(confusion_figure(matrix, names, title=title), f"{prefix}_confusion_matrix.png")

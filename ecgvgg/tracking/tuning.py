"""Hyperparameter search with Optuna over pipeline config keys.

A search space is a YAML mapping from config keys to a float range ``{low, high, log}``, an int
range ``{low, high, step}`` or a list of choices. The study lives in Optuna's storage (by default
a journal file beside the MLflow store), so several ``ecgvgg tune`` processes, on one machine or
on several sharing a filesystem or a database, can work on one search. Each trial is a child
MLflow run; pruning uses the per-epoch validation macro-F1 (between folds for cross-validated
configs). Nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ecgvgg.core.config import PipelineConfig, override, parse_yaml
from ecgvgg.core.errors import ConfigError


class FloatRange(BaseModel):
    """``{low: 1e-4, high: 1e-2, log: true}``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got {self.low} and {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class IntRange(BaseModel):
    """``{low: 64, high: 512, step: 64}``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    low: int
    high: int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got {self.low} and {self.high}")
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {self.step}")
        return self


Dimension = Union[FloatRange, IntRange, list]
_CHOICE_TYPES = (type(None), bool, int, float, str)


def load_space(path: str | Path, base: PipelineConfig) -> dict[str, Dimension]:
    """Read and validate a search space against ``base``: known keys, sound ranges, values the config accepts."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such search space file")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_space(raw, base, str(path))


def parse_space(raw: Any, base: PipelineConfig, source: str = "<space>") -> dict[str, Dimension]:
    """Validate a search space given as a mapping (see :func:`load_space`)."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: expected a mapping of config keys to ranges or choices")
    space: dict[str, Dimension] = {}
    for key, spec in raw.items():
        where = f"{source}: {key}"
        if isinstance(spec, list):
            if not spec or not all(isinstance(v, _CHOICE_TYPES) for v in spec):
                raise ConfigError(f"{where}: choices must be a non-empty list of numbers, strings, booleans or null")
            dim: Dimension = list(spec)
            probes = spec
        elif isinstance(spec, dict):
            is_int = (
                isinstance(spec.get("low"), int) and isinstance(spec.get("high"), int) and not isinstance(spec.get("low"), bool)
            )
            try:
                dim = IntRange.model_validate(spec) if is_int or "step" in spec else FloatRange.model_validate(spec)
            except ValidationError as exc:
                raise ConfigError(
                    f"{where}: "
                    + "; ".join(
                        f"{'.'.join(map(str, e['loc'])) or 'range'}: {e['msg'].replace('Value error, ', '')}"
                        for e in exc.errors()
                    )
                ) from None
            probes = [dim.low, dim.high]
        else:
            raise ConfigError(f"{where}: expected {{low, high[, log|step]}} or a list of choices, got {spec!r}")
        for value in probes:  # the config must accept every end of the range and every choice
            override(base, {key: value}, source=where)
        space[key] = dim
    return space


def suggest(trial: Any, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """Draw one value per key of ``space`` from an Optuna trial."""
    out: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, FloatRange):
            out[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, IntRange):
            out[key] = trial.suggest_int(key, dim.low, dim.high, step=dim.step, log=dim.log)
        else:
            out[key] = trial.suggest_categorical(key, dim)
    return out


def default_storage(tracking_uri: str, study: str) -> str:
    """A journal file beside the MLflow store: ``mlruns/optuna/STUDY.log`` for the default SQLite store."""
    from ecgvgg.tracking.store import sqlite_path

    db = sqlite_path(tracking_uri)
    root = db.parent if db is not None else Path("mlruns")
    return str(root / "optuna" / f"{study}.log")


def sampler_seed(base: int, given: int | None = None) -> int:
    """The TPE seed of this process: ``given`` as it is, else ``base`` mixed with the process id.

    Workers that share a study therefore draw different start-up trials unless each is given
    the same ``--seed`` on purpose; one worker with ``--seed`` on a new study is reproducible.
    """
    import os

    import numpy as np

    if given is not None:
        return given
    return int(np.random.SeedSequence([base, os.getpid()]).generate_state(1)[0])


def open_study(study: str, storage: str, *, seed: int, warmup: int, direction: str = "maximize") -> Any:
    """Create or continue an Optuna study: seeded TPE, median pruning after ``warmup`` steps.

    ``storage`` is a database URL (``postgresql://``, ``mysql://``, ``sqlite://``) or a journal
    file path, which processes on one machine or on a shared filesystem can use together.
    """
    import optuna

    if "://" in storage:
        backend: Any = storage
    else:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        backend = JournalStorage(JournalFileBackend(str(storage)))
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup)
    goal: Any = direction  # "maximize" or "minimize", checked by the config
    return optuna.create_study(
        study_name=study, storage=backend, sampler=sampler, pruner=pruner, direction=goal, load_if_exists=True
    )


def best_config_yaml(base: PipelineConfig, params: Mapping[str, Any]) -> str:
    """A complete pipeline YAML of ``base`` with the best ``params``, runnable with ``ecgvgg run`` as it is."""
    cfg = override(base, params, source="best trial")
    raw = cfg.model_dump(mode="json")
    path = raw["data"]["path"]
    if not path.startswith("sample:"):
        raw["data"]["path"] = str(Path(path).expanduser().resolve())
    if raw["data"].get("y_path"):
        raw["data"]["y_path"] = str(Path(raw["data"]["y_path"]).expanduser().resolve())
    header = "# Best configuration found by ecgvgg tune: " + ", ".join(f"{k}={v}" for k, v in params.items()) + "\n"
    return header + yaml.safe_dump(raw, sort_keys=False)

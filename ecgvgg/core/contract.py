"""A saved model's input contract: what it needs to read raw beats, and the one check that a use fits it.

The contract travels inside the ``.keras`` file (as ``ecgvgg.json``) and in the logged MLflow
model's metadata; :meth:`InputContract.to_dict` writes the same JSON as every earlier version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ecgvgg.core.rows import reference_channels, relative_rows, samples_per_channel

#: A summary of the new beats further than this many training standard deviations from the training
#: beats' is reported as another format (a single MIT-BIH record of the same format stays under 3).
DRIFT_LIMIT = 3.0
#: Fewer beats than this are not compared with the training beats.
DRIFT_MIN_ROWS = 20
#: What :func:`beat_format` measures of each beat, in words.
FORMAT_SUMMARIES = ("lowest sample", "highest sample", "mean sample", "share of zero samples")


def beat_format(beats: Any) -> np.ndarray:
    """Per beat: its lowest, highest and mean sample and its share of zero samples (padding): what another cut
    (``prepare --method``), scaling or unit changes, and a patient's own beat shape (its QRS polarity) does not."""
    a = np.asarray(beats, dtype=np.float64)
    return np.c_[a.min(axis=1), a.max(axis=1), a.mean(axis=1), (a == 0).mean(axis=1)]


@dataclass(frozen=True)
class InputContract:
    """Classes, beat length, reshaping and how the training table was read."""

    classes: list[int]
    class_names: list[str]
    input: dict[str, Any]
    length: int | None
    data: dict[str, Any] = field(default_factory=dict)
    ensemble: bool = False
    #: The weight of the baseline saved with the network (``baseline_blend``); 0: the network alone.
    blend: float = 0.0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InputContract:
        """Read a stored contract (``ecgvgg.json``)."""
        return cls(
            [int(c) for c in raw["classes"]],
            list(raw["class_names"]),
            dict(raw["input"]),
            raw.get("length"),
            dict(raw.get("data") or {}),
            bool(raw.get("ensemble", False)),
            float(raw.get("blend", 0.0)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored form (``ecgvgg.json``)."""
        out = {
            "classes": list(self.classes),
            "class_names": list(self.class_names),
            "input": dict(self.input),
            "length": self.length,
            "data": dict(self.data),
        }
        if self.ensemble:
            out["ensemble"] = True
        if self.blend:
            out["blend"] = self.blend
        return out

    @property
    def features(self) -> list[str]:
        """The training table's feature columns (beat samples, then rhythm columns), when known."""
        return list(self.data.get("features") or [])

    def shape(self, rows: Any) -> Any:
        """Raw rows (beat samples, then rhythm values) reshaped for the network, as in training."""
        from ecgvgg.core.shapes import reshape

        return reshape(rows, self.input["kind"], self.input.get("method", "fold"), self.input.get("size"))

    @property
    def channels(self) -> list[str]:
        """The column prefixes of the signal channels (beats, then reference beats); empty for one channel."""
        return list(self.data.get("channels") or [])

    @property
    def beat_length(self) -> int | None:
        """Samples per beat in each channel."""
        if self.length is None:
            return None
        return samples_per_channel(self.length, len(self.rhythm_columns), len(self.channels))

    @property
    def consensus(self) -> dict[str, Any]:
        """The record consensus the model answers with (``weight``, ``clusters``; empty for none)."""
        return dict(self.data.get("consensus") or {})

    def with_consensus_weight(self, weight: float) -> InputContract:
        """This contract answering with record consensus of ``weight`` (0: none) instead of its own; its own number
        of clusters, else the default."""
        from ecgvgg.core.consensus import CLUSTERS

        data = {k: v for k, v in self.data.items() if k != "consensus"}
        if weight:
            data["consensus"] = {"weight": float(weight), "clusters": int(self.consensus.get("clusters", CLUSTERS))}
        return replace(self, data=data)

    def with_consensus(self, probs: np.ndarray, rows: np.ndarray, groups: Any) -> np.ndarray:
        """``probs`` of raw ``rows`` after the model's record consensus over ``groups`` (as they are without one)."""
        from ecgvgg.core.consensus import record_consensus

        c = self.consensus
        if not c or groups is None:
            return probs
        channels, rhythm = self.channels, len(self.rhythm_columns)
        features = relative_rows(rows, max(1, len(channels)), reference_channels(channels), rhythm)
        return record_consensus(probs, features, np.asarray(groups), float(c["weight"]), int(c["clusters"]), rhythm=rhythm)

    @property
    def adaptation(self) -> dict[str, Any]:
        """The record adaptation the network answers with (``weight``, ``reference``: each batch-normalisation
        layer's input statistics over a sample of the training rows; empty for none)."""
        return dict(self.data.get("adaptation") or {})

    def with_adaptation(self, weight: float, reference: Mapping[str, Any] | None = None) -> InputContract:
        """This contract answering with record adaptation of ``weight`` (0: none), with the given ``reference``
        statistics or its own."""
        data = {k: v for k, v in self.data.items() if k != "adaptation"}
        reference = reference if reference is not None else self.adaptation.get("reference")
        if weight:
            if not reference:
                raise ValueError("record adaptation needs the training rows' reference statistics, which this model lacks")
            data["adaptation"] = {"weight": float(weight), "reference": dict(reference)}
        return replace(self, data=data)

    def network_probabilities(self, model: Any, shaped: np.ndarray, groups: Any, batch_size: int = 1024) -> np.ndarray:
        """The network's class probabilities of ``shaped`` rows: each record of ``groups`` answered with the model's
        record adaptation when it has one and the records are known, else row by row."""
        a = self.adaptation
        if not a or groups is None:
            return np.asarray(model.predict(shaped, batch_size=batch_size, verbose=0), dtype=np.float32)
        from ecgvgg.core.adaptation import record_adapted

        return record_adapted(model, shaped, np.asarray(groups), a["reference"], float(a["weight"]))

    @property
    def prepare(self) -> dict[str, Any]:
        """How ``ecgvgg prepare`` cut the training beats (empty when unknown)."""
        return dict(self.data.get("prepare") or {})

    @property
    def rhythm_columns(self) -> list[str]:
        """The rhythm columns the model reads after the beat samples."""
        return list(self.data.get("rhythm_columns") or [])

    def drift(self, rows: Any) -> str | None:
        """Why ``rows`` (raw, in the model's column order) look cut or scaled unlike the training beats, or None:
        the mean :func:`beat_format` of their first channel against the training beats' (kept in the contract)."""
        stats = self.data.get("beat_format")
        rows = np.asarray(rows, dtype=np.float64)
        length = self.beat_length
        if (
            not stats
            or len(stats["mean"]) != len(FORMAT_SUMMARIES)
            or rows.ndim != 2
            or len(rows) < DRIFT_MIN_ROWS
            or not length
            or rows.shape[1] != self.length
        ):
            return None
        mean, sd = np.asarray(stats["mean"]), np.maximum(np.asarray(stats["std"]), 1e-6)
        here = beat_format(rows[:, :length]).mean(axis=0)
        z = np.abs(here - mean) / sd
        j = int(np.argmax(z))
        if z[j] <= DRIFT_LIMIT:
            return None
        return (
            f"these {len(rows)} beats look cut or scaled unlike the model's training beats: their "
            f"{FORMAT_SUMMARIES[j]} averages {here[j]:.3g}, the training beats' {mean[j]:.3g} ({z[j]:.0f} "
            "training standard deviations away). Were they made another way (another ecgvgg prepare --method "
            "or --scale, another sampling rate or unit)? Its predictions on them are unreliable"
        )

    def mismatches(self, other: InputContract, *, new_head: bool = False, source: bool = False) -> list[str]:
        """How ``other`` (this config and data) differs from this contract, in words; empty when it fits.

        ``new_head`` allows another class list; ``source`` (starting a run from this model) also
        refuses a fold ensemble.
        """
        differs = []
        if self.channels != other.channels:
            differs.append(f"channels {self.channels or ['one']} there, {other.channels or ['one']} here (data.channels)")
        elif self.length != other.length:
            differs.append(f"beat length {self.length} there, {other.length} here")
        kind, mine = self.input.get("kind"), other.input.get("kind")
        if kind != mine:
            differs.append(f"input.kind {kind} there, {mine} here")
        elif mine == "2d" and (self.input.get("method"), self.input.get("size")) != (
            other.input.get("method"),
            other.input.get("size"),
        ):
            differs.append(
                f"input.method/size {self.input.get('method')}/{self.input.get('size')} there, "
                f"{other.input.get('method')}/{other.input.get('size')} here"
            )
        if not new_head and self.class_names != other.class_names:
            differs.append(
                f"classes {self.class_names} there, {other.class_names} here (set model.new_head: true for a new class list)"
            )
        if source and self.ensemble:
            differs.append("it is a fold ensemble; start from one of its fold runs")
        return differs


def contract_for(
    cfg: Any,
    features: Sequence[Any],
    seen_groups: Sequence[Any] | np.ndarray | None = None,
    ensemble: bool = False,
    rows: Any = None,
    made: dict[str, Any] | None = None,
) -> InputContract:
    """The contract of a model trained with ``cfg`` on a table with these feature columns, the groups its
    training and validation rows came from (to warn when it is scored on them), and the :func:`beat_format` of
    (a sample of) its training ``rows`` (to warn when new beats were made another way), and how ``prepare``
    ``made`` the training table (so that ``annotate`` cuts new recordings the same way)."""
    d = cfg.data
    data = {
        "label_column": d.label_column,
        "group_column": d.group_column,
        "header": d.header,
        "features": [str(f) for f in features],
        "rhythm_columns": list(d.rhythm_columns),
    }
    if d.channels:
        data["channels"] = list(d.channels)
    if made:
        data["prepare"] = dict(made)
    if cfg.record_consensus:
        data["consensus"] = {"weight": cfg.record_consensus, "clusters": cfg.record_clusters}
    if seen_groups is not None:
        data["train_groups"] = sorted({str(g) for g in seen_groups})
    if rows is not None and len(rows):
        length = samples_per_channel(len(features), len(d.rhythm_columns), len(d.channels))
        summary = beat_format(np.asarray(rows)[:, :length])
        data["beat_format"] = {
            "mean": [round(float(v), 6) for v in summary.mean(axis=0)],
            "std": [round(float(v), 6) for v in summary.std(axis=0)],
        }
    blend = cfg.baseline_blend
    return InputContract(d.classes, list(d.class_names), cfg.input.model_dump(), len(features), data, ensemble, blend)

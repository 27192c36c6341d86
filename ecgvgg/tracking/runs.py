"""The runs of an MLflow store as one table: model, parameters, time, score (what goes in a paper)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd

#: Columns of :func:`runs_frame`, in order (``recall_<class>`` columns follow them).
COLUMNS = (
    "name",
    "id",
    "run_id",
    "experiment",
    "status",
    "collapsed",
    "sampler",
    "model",
    "input",
    "params_total",
    "params_trainable",
    "params_non_trainable",
    "seconds",
    "epochs",
    "val_macro_f1",
    "macro_f1",
    "macro_f1_ci_low",
    "macro_f1_ci_high",
    "cv_macro_f1_mean",
    "cv_macro_f1_std",
    "baseline",
    "baseline_macro_f1",
)


def runs_frame(
    client: Any,
    experiment_ids: list[str],
    *,
    stale: Collection[str] = frozenset(),
    limit: int = 50,
) -> pd.DataFrame:
    """One row per run, newest first: verdict, settings, size, time and scores (test, or out-of-fold for CV)."""
    runs = (
        client.search_runs(experiment_ids, max_results=limit, order_by=["attributes.start_time DESC"]) if experiment_ids else []
    )
    names = {e: client.get_experiment(e).name for e in experiment_ids}
    rows = []
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        kind = "oof" if "oof_macro_f1" in m else "test"
        low, high = m.get(f"{kind}_macro_f1_ci_low"), m.get(f"{kind}_macro_f1_ci_high")
        end = r.info.end_time or r.info.start_time
        row = {
            "name": r.info.run_name,
            "id": r.info.run_id[:8],
            "run_id": r.info.run_id,
            "experiment": names.get(r.info.experiment_id, ""),
            "status": "STALE" if r.info.run_id in stale else r.info.status,
            "collapsed": t.get("collapsed", ""),
            "sampler": t.get("sampler", ""),
            "model": t.get("model", ""),
            "input": t.get("input", ""),
            "params_total": _int(m.get("params_total")),
            "params_trainable": _int(m.get("params_trainable")),
            "params_non_trainable": _int(m.get("params_non_trainable")),
            "seconds": round(m["training_seconds"]) if "training_seconds" in m else round((end - r.info.start_time) / 1000),
            "epochs": _int(m.get("epochs_run")),
            "val_macro_f1": m.get("model_val_macro_f1", m.get("val_macro_f1")),
            "macro_f1": m.get(f"{kind}_macro_f1"),
            "macro_f1_ci_low": low,
            "macro_f1_ci_high": high,
            "cv_macro_f1_mean": m.get("cv_macro_f1_mean"),
            "cv_macro_f1_std": m.get("cv_macro_f1_std"),
            **_baseline(m),
        }
        order = _class_order(r.data.params.get("data.class_names"))
        recalls = {k[len(f"{kind}_recall_") :]: v for k, v in m.items() if k.startswith(f"{kind}_recall_")}
        row.update({f"recall_{c}": recalls[c] for c in sorted(recalls, key=lambda c: order.get(c, len(order)))})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not rows:
        return pd.DataFrame(columns=list(COLUMNS))
    counts = ["params_total", "params_trainable", "params_non_trainable", "seconds", "epochs"]
    return frame.astype({c: "Int64" for c in counts})


def _baseline(metrics: dict[str, float]) -> dict[str, Any]:
    """The run's baseline (``rf``, ``hgb``; empty without one) and its macro-F1, from ``baseline_<kind>_macro_f1``."""
    for key, value in metrics.items():
        if key.startswith("baseline_") and key.endswith("_macro_f1"):
            return {"baseline": key[len("baseline_") : -len("_macro_f1")], "baseline_macro_f1": value}
    return {"baseline": "", "baseline_macro_f1": None}


def _class_order(param: str | None) -> dict[str, int]:
    """Positions of the class names logged as the ``data.class_names`` param (a JSON list)."""
    import json

    try:
        return {name: i for i, name in enumerate(json.loads(param or "[]"))}
    except ValueError:
        return {}


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def to_markdown(frame: pd.DataFrame) -> str:
    """A Markdown table of ``frame`` (numbers to three decimals), without extra dependencies."""

    def cell(v: Any) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and pd.isna(v)):
            return ""
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


#: Columns that sort smallest first; every other sorts best (largest) first.
ASCENDING = ("seconds", "params_total", "params_trainable", "params_non_trainable")


def collect_runs(
    uri: str,
    experiment: str | None = None,
    *,
    stale_only: bool = False,
    close_stale: bool = False,
    sort: str | None = None,
    limit: int = 100,
) -> pd.DataFrame:
    """The runs table of the store at ``uri`` (one experiment, or all), optionally only its stale runs,
    which ``close_stale`` ends as KILLED; sorted by ``sort``. Refuses a missing store or experiment."""
    from ecgvgg.tracking import store
    from ecgvgg.core.errors import ConfigError

    db = store.sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ConfigError(f"no MLflow store at {db.resolve()} (from {uri}); pass --tracking-uri")
    client = store.client(uri)
    experiments = [e.experiment_id for e in client.search_experiments() if experiment is None or e.name == experiment]
    if experiment is not None and not experiments:
        names = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"--experiment {experiment}: no such experiment in {uri} (experiments: {', '.join(names) or 'none'})")
    dead = {r.info.run_id for r in store.stale_runs(uri)}
    frame = runs_frame(client, experiments, stale=dead, limit=limit)
    if stale_only or close_stale:
        frame = frame[frame["status"] == "STALE"]
    if close_stale:
        for run_id in [r for r in dead if r in set(frame["run_id"])]:
            store.mark_killed(uri, run_id)
        frame = frame.assign(status="KILLED")
    if sort is not None:
        if sort not in frame.columns:
            raise ConfigError(f"--sort {sort}: no such column (columns: {', '.join(frame.columns)})")
        frame = frame.sort_values(sort, ascending=sort in ASCENDING, na_position="last")
    return frame

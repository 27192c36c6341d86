"""The runs of an MLflow store as one table: model, parameters, time, score (what goes in a paper)."""

from __future__ import annotations

from typing import Any

import pandas as pd

#: Columns of :func:`runs_frame`, in order (``recall_<class>`` columns follow ``macro_f1_ci``).
COLUMNS = ("name", "id", "run_id", "experiment", "status", "collapsed", "sampler", "model", "input", "params_total",
           "params_trainable", "params_non_trainable", "seconds", "epochs", "val_macro_f1", "macro_f1", "macro_f1_ci", "cv_macro_f1",
           "baseline_rf_macro_f1")


def runs_frame(client: Any, experiment_ids: list[str], *, stale: set[str] = frozenset(), limit: int = 50,
               ) -> pd.DataFrame:
    """One row per run, newest first: verdict, settings, size, time and scores (test, or out-of-fold for CV)."""
    runs = client.search_runs(experiment_ids, max_results=limit, order_by=["attributes.start_time DESC"]) \
        if experiment_ids else []
    names = {e: client.get_experiment(e).name for e in experiment_ids}
    rows = []
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        kind = "oof" if "oof_macro_f1" in m else "test"
        low, high = m.get(f"{kind}_macro_f1_ci_low"), m.get(f"{kind}_macro_f1_ci_high")
        end = r.info.end_time or r.info.start_time
        row = {
            "name": r.info.run_name, "id": r.info.run_id[:8], "run_id": r.info.run_id, "experiment": names.get(r.info.experiment_id, ""),
            "status": "STALE" if r.info.run_id in stale else r.info.status,
            "collapsed": t.get("collapsed", ""), "sampler": t.get("sampler", ""), "model": t.get("model", ""),
            "input": t.get("input", ""), "params_total": _int(m.get("params_total")),
            "params_trainable": _int(m.get("params_trainable")),
            "params_non_trainable": _int(m.get("params_non_trainable")),
            "seconds": round(m["training_seconds"]) if "training_seconds" in m else round((end - r.info.start_time) / 1000),
            "epochs": _int(m.get("epochs_run")), "val_macro_f1": m.get("model_val_macro_f1", m.get("val_macro_f1")),
            "macro_f1": m.get(f"{kind}_macro_f1"),
            "macro_f1_ci": f"{low:.3f}-{high:.3f}" if low is not None and high is not None else "",
            "cv_macro_f1": (f"{m['cv_macro_f1_mean']:.3f}±{m['cv_macro_f1_std']:.3f}"
                            if "cv_macro_f1_mean" in m else ""),
            "baseline_rf_macro_f1": m.get("baseline_rf_macro_f1"),
        }
        order = _class_order(r.data.params.get("data.class_names"))
        recalls = {k[len(f"{kind}_recall_"):]: v for k, v in m.items() if k.startswith(f"{kind}_recall_")}
        row.update({f"recall_{c}": recalls[c] for c in sorted(recalls, key=lambda c: order.get(c, len(order)))})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not rows:
        return pd.DataFrame(columns=list(COLUMNS))
    counts = ["params_total", "params_trainable", "params_non_trainable", "seconds", "epochs"]
    return frame.astype({c: "Int64" for c in counts})


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

"""The terminal: per-class tables, the run summary, the collapse box, the runs table and training progress.

Everything here prints; nothing computes a score. Training progress is :mod:`ecgvgg.cli.progress`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)

#: AAMI EC57 highlights supraventricular (SVEB) and ventricular (VEB) ectopic beats.
AAMI_HIGHLIGHT = {"S": "SVEB", "V": "VEB"}


def scores_table(scores: Mapping[str, Any], names: Sequence[str], title: str) -> Table:
    """Per-class precision (+P), recall (Se), F1, false positive rate and support, as AAMI EC57 reports them."""
    from ecgvgg.core.metrics import aami_scores

    aami = aami_scores(scores["confusion_matrix"], names)
    table = Table(title=title, title_justify="left")
    for col in ("class", "precision (+P)", "recall (Se)", "F1", "FPR", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for i, name in enumerate(names):
        label = f"[bold]{name} ({AAMI_HIGHLIGHT[name]})[/]" if name in AAMI_HIGHLIGHT else name
        table.add_row(
            label,
            f"{scores['precision'][i]:.3f}",
            f"{scores['recall'][i]:.3f}",
            f"{scores['f1'][i]:.3f}",
            f"{aami[name]['FPR']:.3f}",
            str(scores["support"][i]),
        )
    table.add_section()
    table.add_row("macro F1", "", "", f"{scores['macro_f1']:.3f}", "")
    table.add_row("accuracy", "", "", f"{scores['accuracy']:.3f}", "")
    if "S" in names and "V" in names:
        from ecgvgg.core.metrics import jk_index

        jk = jk_index(scores["confusion_matrix"], names)
        table.add_row("jκ index", "", "", f"{jk['jk']:.3f}", "")
        table.add_row("Cohen's κ", "", "", f"{jk['kappa']:.3f}", "")
    return table


def cv_table(result: Any) -> Table:
    """Per-class recall and F1 as mean +- sd over the folds, beside the pooled out-of-fold scores."""
    cv, scores, names = result.cv, result.scores, result.class_names
    table = Table(title=f"{cv['folds']}-fold cross-validation (mean ± sd over folds; out-of-fold pooled)", title_justify="left")
    for col in ("class", "recall", "F1", "out-of-fold recall", "out-of-fold F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")

    def pm(metric: str, name: str) -> str:
        mean_sd = cv[metric].get(name)
        return f"{mean_sd[0]:.3f}±{mean_sd[1]:.3f}" if mean_sd else "-"

    for i, name in enumerate(names):
        label = f"[bold]{escape(name)} ({AAMI_HIGHLIGHT[name]})[/]" if name in AAMI_HIGHLIGHT else escape(name)
        table.add_row(
            label,
            pm("recall", name),
            pm("f1", name),
            f"{scores['recall'][i]:.3f}",
            f"{scores['f1'][i]:.3f}",
            str(scores["support"][i]),
        )
    table.add_section()
    mean, sd = cv["macro_f1"]
    table.add_row("macro F1", "", f"{mean:.3f}±{sd:.3f}", "", f"{scores['macro_f1']:.3f}", "")
    return table


def print_summary(result: Any) -> None:
    """The interval, the baseline comparison, the protocol and any class missed on part of the held-out rows."""
    what = "out-of-fold macro-F1" if result.cv else "test macro-F1"
    f1 = result.scores["macro_f1"]
    if result.ci is not None:
        by = "groups" if result.kind.startswith(("grouped", "inter-patient")) else "beats"
        console.print(
            f"{what} {f1:.3f}, 95% bootstrap interval {result.ci[0]:.3f}-{result.ci[1]:.3f} "
            f"(resampling test {by}: it covers the sampling of these test rows, not the choice of "
            "split or the training run)"
        )
    if not result.cv:
        console.print(
            "one split: another split or seed can move this score by more than its interval; for a "
            "number to report, cross-validate: --set split.folds=5"
        )
    if result.baseline_macro_f1 is not None:
        b = result.baseline_macro_f1
        from ecgvgg.core.baselines import comparison

        c = result.cfg
        console.print(comparison(c.baseline_kind, c.baseline_blend, f1, b, c.record_consensus, c.record_adaptation))
    console.print(f"split: {escape(result.kind)}")
    for name, where in result.missed.items():
        err_console.print(
            f"[yellow]warning:[/] no beat of class {escape(name)} in {escape(where)} was called "
            f"{escape(name)} (recall 0 there); the model does call other beats {escape(name)}, so it "
            "has not collapsed"
        )


def collapse_box(reason: str) -> None:
    """The red box that says the model collapsed and why its accuracy means nothing."""
    err_console.print(
        Panel(
            f"[bold]The model collapsed:[/] {escape(reason)}.\n"
            "Its accuracy means nothing: check class weights, the sampler, the learning rate.",
            title="[bold red]COLLAPSED MODEL[/]",
            border_style="red",
        )
    )


#: Columns of the terminal's runs table, the first ones kept longest when the terminal is narrow.
RUN_COLUMNS = (
    "id",
    "macro-F1 [95%]",
    "status",
    "baseline",
    "model",
    "collapsed",
    "name",
    "CV mean±sd",
    "recall",
    "epochs",
    "time",
    "val F1",
    "params",
    "trainable",
    "non-trainable",
)


def runs_table(frame: Any, uri: str, width: int | None = None) -> Table:
    """The runs as a Rich table for a terminal: whole cells, and only the columns that fit in ``width``
    (the caption says which were left out)."""
    recall_cols = [c for c in frame.columns if c.startswith("recall_")]
    cells: dict[str, list[str]] = {c: [] for c in RUN_COLUMNS}
    for row in frame.to_dict(orient="records"):
        f1, low, high = row["macro_f1"], row["macro_f1_ci_low"], row["macro_f1_ci_high"]
        values = {
            "id": row["id"],
            "name": escape(str(row["name"])),
            "status": row["status"],
            "collapsed": "[red]yes[/]" if row["collapsed"] == "true" else "no" if row["collapsed"] == "false" else "",
            "model": escape(f"{row['sampler']} {row['input']}"),
            "params": _fmt_int(row["params_total"]),
            "trainable": _fmt_int(row["params_trainable"]),
            "non-trainable": _fmt_int(row["params_non_trainable"]),
            "time": f"{row['seconds']}s",
            "epochs": _fmt_int(row["epochs"]),
            "val F1": _fmt(row["val_macro_f1"]),
            "macro-F1 [95%]": f"{_fmt(f1)} [{_fmt(low)}-{_fmt(high)}]" if not _missing(low) else _fmt(f1),
            "CV mean±sd": ""
            if _missing(row["cv_macro_f1_mean"])
            else f"{row['cv_macro_f1_mean']:.3f}±{row['cv_macro_f1_std']:.3f}",
            "recall": "/".join(f"{row[c]:.2f}" for c in recall_cols if not _missing(row.get(c))),
            "baseline": f"{row['baseline']} {_fmt(row['baseline_macro_f1'])}" if row["baseline"] else "",
        }
        for col in RUN_COLUMNS:
            cells[col].append(values[col])
    heads = {c: f"recall {'/'.join(r[7:] for r in recall_cols)}" if c == "recall" else c for c in RUN_COLUMNS}
    shown = list(RUN_COLUMNS)
    if width is not None:  # 3 characters of border and padding a column, 1 more at the edge
        size = {c: max([len(heads[c]), *(len(Text.from_markup(v).plain) for v in cells[c])]) + 3 for c in shown}
        used, shown = 1, []
        for c in RUN_COLUMNS:  # by priority: each column that still fits, whole
            if used + size[c] <= width or len(shown) < 2:
                shown.append(c)
                used += size[c]
    hidden = [c for c in RUN_COLUMNS if c not in shown]
    caption = (
        f"{len(hidden)} column(s) left out to fit the terminal ({', '.join(hidden)}): widen it, or write every "
        "column with --out runs.csv"
        if hidden
        else None
    )
    table = Table(title=f"runs in {escape(uri)}", title_justify="left", caption=caption, caption_justify="left")
    for col in shown:
        table.add_column(heads[col], no_wrap=True, overflow="ignore")
    for i in range(len(frame)):
        table.add_row(*(cells[c][i] for c in shown))
    return table


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _fmt(value: Any) -> str:
    return "" if _missing(value) else f"{value:.3f}"


def _fmt_int(value: Any) -> str:
    return "" if _missing(value) else f"{int(value):,}"


def print_run(
    result: Any, run_id: str | None, run_name: str | None, experiment: str, uri: str, model_uri: str, model_path: Any
) -> None:
    """What ``ecgvgg run`` prints after a study: its run, the per-class tables, the summary and the model."""
    console.print(f"run id: [bold]{run_id}[/] {escape(run_name or '')} (experiment {escape(experiment)}, store {escape(uri)})")
    if result.cv:
        console.print(cv_table(result))
        console.print(scores_table(result.scores, result.class_names, "out-of-fold, pooled (AAMI EC57)"))
    else:
        console.print(scores_table(result.scores, result.class_names, "test split"))
    print_summary(result)
    if not result.cfg.training.deterministic:
        console.print(
            "training is not deterministic: the same command can end at another epoch and score; set "
            "training.deterministic: true for repeatable runs (slower)"
        )
    console.print(f"model: {escape(model_uri)}  (local copy: {escape(str(model_path))})")


def print_trained(result: Any, run_name: str) -> None:
    """One line per single-split run, terminal or not: epochs trained, best epoch, validation macro-F1."""
    if result.cv is None and result.folds:
        fold = result.folds[-1]
        best = f", best epoch {fold.fit.best_epoch}" if fold.fit.best_epoch else ""
        console.print(
            f"{escape(run_name)}: trained {fold.fit.epochs_run} epochs{best} "
            f"(val macro-F1 {fold.val_scores.get('macro_f1', 0.0):.3f})"
        )


def sweep_table(rows: Sequence[tuple[Mapping[str, Any], Any, str | None]], title: str) -> Table:
    """The sweep's combinations, best validation macro-F1 first: ``(combination, result, run id)`` rows."""
    table = Table(title=title, title_justify="left")
    for col in ("run", *(rows[0][0] if rows else ()), "val macro-F1", "test macro-F1", "collapsed"):
        table.add_column(col)
    for combo, r, run_id in rows:
        table.add_row(
            (run_id or "")[:8],
            *(str(v) for v in combo.values()),
            f"{r.val_macro_f1:.3f}",
            f"{r.scores.get('macro_f1', 0.0):.3f}",
            "[red]yes[/]" if r.collapsed else "no",
        )
    return table


def trials_table(done: Sequence[Any], total: int, name: str, out: Any, keys: Sequence[str]) -> Table:
    """The five best trials of a tuning study."""
    table = Table(
        title=f"study {escape(name)}: best trials ({len(done)} complete of {total}; best configuration in {escape(str(out))})",
        title_justify="left",
    )
    for col in ("trial", "objective", "run", *(k.split(".")[-1] for k in keys)):
        table.add_column(col)
    for t in sorted(done, key=lambda t: t.value, reverse=True)[:5]:
        table.add_row(
            str(t.number),
            f"{t.value:.3f}",
            str(t.user_attrs.get("run_id", ""))[:8],
            *(escape(f"{v:.3g}" if isinstance(v := t.params.get(k, ""), float) else str(v)) for k in keys),
        )
    return table

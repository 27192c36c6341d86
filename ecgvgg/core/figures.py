"""Matplotlib figures: training curves, confusion matrices, Grad-CAM bands and runs (Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def training_curves_figure(history: Mapping[str, Sequence[float]], names: Sequence[str], title: str, first_epoch: int = 1) -> Any:
    """Loss, validation macro-F1 and per-class validation recall per epoch, as one matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    epochs = range(first_epoch, first_epoch + len(history.get("val_macro_f1", [])))
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if history.get(key):
            axes[0].plot(list(epochs)[: len(history[key])], history[key], label=label)
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    axes[1].plot(epochs, history.get("val_macro_f1", []), color="black")
    axes[1].set(title="validation macro-F1", xlabel="epoch", ylim=(0, 1.02))
    for name in names:
        axes[2].plot(epochs, history.get(f"val_recall_{name}", []), label=name)
    axes[2].set(title="validation recall per class", xlabel="epoch", ylim=(-0.02, 1.02))
    axes[2].legend(ncol=len(names), fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2))
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str = "confusion matrix") -> Any:
    """A matplotlib figure of the confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ConfusionMatrixDisplay(matrix, display_labels=list(names)).plot(ax=ax, colorbar=False, values_format="d")
    ax.set_title(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def runs_figure(frame: Any, title: str = "runs") -> Any:
    """Each scored run as a point: macro-F1 with its 95% interval against training time, labelled with its name.

    A smaller or faster network is the better choice when its interval overlaps the bigger one's.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    scored = frame[frame["macro_f1"].notna()] if len(frame) else frame
    for row in scored.to_dict(orient="records"):
        low, high = row["macro_f1_ci_low"], row["macro_f1_ci_high"]
        low, high = (None, None) if low is None or high is None or low != low else (float(low), float(high))
        f1, seconds = float(row["macro_f1"]), float(row["seconds"])
        err = [[f1 - low], [high - f1]] if low is not None and high is not None else None
        ax.errorbar([seconds], [f1], yerr=err, fmt="o", capsize=3)
        ax.annotate(str(row["name"]), (seconds, f1), textcoords="offset points", xytext=(5, 5), fontsize="small")
    ax.set(xlabel="training time (s)", ylabel="macro-F1 (test, or out-of-fold) with 95% interval", title=title, ylim=(0, 1.02))
    fig.tight_layout()
    plt.close(fig)
    return fig


def gradcam_figure(beat: np.ndarray, saliency: np.ndarray, title: str, rate: float | None = None) -> Any:
    """A mean beat drawn over its mean Grad-CAM saliency as a colour band (0 to 1), with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    t = np.arange(len(beat)) / rate if rate else np.arange(len(beat))
    low, high = float(np.min(beat)), float(np.max(beat))
    pad = 0.05 * (high - low or 1.0)
    band = ax.imshow(
        np.asarray(saliency)[None, :],
        aspect="auto",
        cmap="magma",
        vmin=0,
        vmax=1,
        alpha=0.85,
        extent=(float(t[0]), float(t[-1]), low - pad, high + pad),
        origin="lower",
    )
    ax.plot(t, beat, color="white", linewidth=3.0)
    ax.plot(t, beat, color="black", linewidth=1.4)
    ax.set(title=title, xlabel="seconds" if rate else "sample", ylabel="mean beat")
    fig.colorbar(band, ax=ax, label="Grad-CAM saliency", fraction=0.05, pad=0.02)
    fig.tight_layout()
    plt.close(fig)
    return fig


def class_saliency_figures(saliency: Any, title: str, beats: str = "beats") -> list[tuple[str, Any]]:
    """One :func:`gradcam_figure` per class that has beats in a ``ClassSaliency``, as (class name, figure)."""
    figures = []
    for c, name in enumerate(saliency.names):
        if saliency.counts[c]:
            beat, band = saliency.mean(c)
            figures.append((name, gradcam_figure(beat, band, f"{title}: {int(saliency.counts[c])} {beats} predicted {name}")))
    return figures


def write_figure(figure: Any, out: Any) -> None:
    """Save a figure as a PNG file, atomically."""
    from ecgvgg.core.files import atomic

    with atomic(out) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


#: Colours of the beat classes in recording pictures.
CLASS_COLOURS = {"N": "#2b8a3e", "S": "#1c7ed6", "V": "#e03131", "F": "#f08c00", "Q": "#868e96"}


def recording_figure(signal: np.ndarray, fs: float, start: int, beats: Any, title: str) -> Any:
    """A labelled recording at a glance: a 10 s ECG strip (``signal`` from sample ``start``) with each beat's
    class, the RR tachogram coloured by class, and beats per class per hour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (strip, tacho, hourly) = plt.subplots(3, 1, figsize=(11, 8), gridspec_kw={"height_ratios": [1.3, 1, 1]})
    t = (start + np.arange(len(signal))) / fs
    strip.plot(t, signal, color="black", linewidth=0.8)
    shown = beats[(beats["sample"] >= start) & (beats["sample"] < start + len(signal))]
    top = float(np.max(signal)) if len(signal) else 1.0
    for row in shown.itertuples():
        colour = CLASS_COLOURS.get(row.label, "black")
        strip.axvline(row.time_s, color=colour, alpha=0.25, linewidth=4)
        strip.text(row.time_s, top, row.label, color=colour, ha="center", va="bottom", fontweight="bold")
    strip.set(xlabel="time (s)", ylabel="signal", title=title)
    rr = np.diff(beats["time_s"].to_numpy())
    for name, colour in CLASS_COLOURS.items():
        mine = beats["label"].to_numpy()[1:] == name
        if mine.any():
            tacho.scatter(beats["time_s"].to_numpy()[1:][mine] / 60, rr[mine], s=4, color=colour, label=name)
    tacho.set(xlabel="time (min)", ylabel="RR interval (s)", ylim=(0, min(3.0, float(np.max(rr, initial=1)) * 1.1)))
    tacho.legend(loc="upper right", markerscale=3, fontsize="small", ncol=5)
    seconds = float(beats["time_s"].max()) if len(beats) else 0.0
    step = 3600.0 if seconds >= 7200 else 300.0  # hours, or 5 minutes for a short recording
    unit = 3600.0 if step == 3600 else 60.0  # the axis in hours, or in minutes
    bins = (beats["time_s"] // step) * step / unit
    counts = pd_crosstab(bins, beats["label"])
    bottom = np.zeros(len(counts))
    for name, colour in CLASS_COLOURS.items():
        if name in counts.columns:
            hourly.bar(counts.index, counts[name], width=0.9 * step / unit, align="edge", bottom=bottom, color=colour, label=name)
            bottom += counts[name].to_numpy()
    hourly.set(
        xlabel="time (h)" if unit == 3600 else "time (min)", ylabel="beats per hour" if step == 3600 else "beats per 5 minutes"
    )
    hourly.legend(loc="upper right", fontsize="small", ncol=5)
    fig.tight_layout()
    plt.close(fig)
    return fig


def pd_crosstab(index: Any, columns: Any) -> Any:
    """Counts of ``columns`` values per ``index`` value (a pandas crosstab)."""
    import pandas as pd

    return pd.crosstab(index, columns)

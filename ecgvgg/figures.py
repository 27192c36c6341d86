"""Matplotlib figures that a run logs: training curves and confusion matrices (Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def training_curves_figure(history: Mapping[str, Sequence[float]], names: Sequence[str], title: str,
                           first_epoch: int = 1) -> Any:
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



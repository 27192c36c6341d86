"""Training progress on the terminal: :class:`TerminalObserver` shows bars over epochs and batches."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Optional

from ecgvgg.core.events import Observer
from ecgvgg.cli.report import err_console


class TerminalObserver(Observer):
    """Progress bars over epochs and batches while a study trains; one line per epoch off a terminal."""

    def __init__(self, epochs: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.epochs = epochs
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        self._callback: Any = None

    def __enter__(self) -> TerminalObserver:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def keras_callbacks(self) -> Sequence[Any]:
        """The Keras callback that drives the bars (one for every fold)."""
        if self._callback is None:
            self._callback = _progress_callback(self.progress, self.epochs)
        return [self._callback]


def _progress_callback(progress: Any, epochs: int) -> Any:
    """A Keras callback that drives a rich progress bar over epochs and batches."""
    import keras

    class RichProgress(keras.callbacks.Callback):
        epoch_task: Any
        batch_task: Any

        def on_train_begin(self, logs: Optional[dict] = None) -> None:
            if hasattr(self, "epoch_task"):  # a later fold of a cross-validated run
                progress.reset(self.epoch_task, description="epochs")
                progress.reset(self.batch_task, total=self.params.get("steps") or None)
                return
            self.epoch_task = progress.add_task("epochs", total=epochs)
            self.batch_task = progress.add_task("batches", total=self.params.get("steps") or None)

        def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
            progress.reset(self.batch_task, description=f"epoch {epoch + 1}")

        def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
            progress.advance(self.batch_task)

        def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
            f1 = (logs or {}).get("val_macro_f1")
            progress.update(
                self.epoch_task,
                completed=epoch + 1,
                description=f"epochs (val macro-F1 {f1:.3f})" if f1 is not None else "epochs",
            )
            if not err_console.is_terminal:  # CI logs, nohup: the bars vanish, so leave one line per epoch
                loss = (logs or {}).get("loss")
                print(
                    f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, val macro-F1 {f1:.3f}"
                    if loss is not None and f1 is not None
                    else f"epoch {epoch + 1}/{epochs}",
                    file=sys.stderr,
                    flush=True,
                )

    return RichProgress()

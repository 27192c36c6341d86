"""How a command ends: exit statuses, bad input as one line, interrupts, and a quiet TensorFlow start-up.

Exit status: 0 success, 2 bad config or bad data (one line, no traceback unless ``--debug``),
3 the model collapsed, 130 on Ctrl-C and 143 on SIGTERM (the open run marked KILLED), 1 otherwise.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import typer
from rich.markup import escape

from ecgvgg.core.errors import ConfigError, DataError
from ecgvgg.core.events import Observer
from ecgvgg.cli.report import err_console

EXIT_OK, EXIT_BAD_INPUT, EXIT_COLLAPSED = 0, 2, 3


@dataclass
class Invocation:
    """One command's options and what an interrupt should say: the last run opened, how to resume it."""

    debug: bool = False
    verbose: bool = False
    run_id: Optional[str] = None
    resume_hint: Optional[str] = None
    study: Optional[str] = None

    def run_opened(self, run_id: str) -> None:
        """Remember the run that was opened last (the one an interrupt marks KILLED)."""
        self.run_id = run_id


def show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Optional[str] = None
) -> None:
    """Print a warning as one line, without the source line that Python adds."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    err_console.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)


def _one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception's message as one line of at most ``limit`` characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(lines) > 1 and not text.endswith((":", "(")):
        text += " ..."
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_tensorflow(inv: Invocation) -> None:
    """Import TensorFlow and look for GPUs once, keeping its C++ start-up chatter off the terminal.

    TensorFlow writes oneDNN and CUDA notices straight to file descriptor 2 while it loads; they
    are hidden unless ``--verbose``. Called only after the config and the data have been checked.
    """
    if inv.verbose or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that a running MLflow run is closed as KILLED."""


class _Signals:
    """Whether training is under way (an interrupt then waits for the end of the step) and what is pending."""

    deferring = False
    pending: type[KeyboardInterrupt] | None = None


def _on_signal(signum: int, frame: Any) -> None:
    """Ctrl-C or SIGTERM: raise now, or, while training, at the end of the step (a second one raises now)."""
    kind = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    if _Signals.deferring and _Signals.pending is None:
        _Signals.pending = kind
        return
    raise kind()


class StepInterrupts(Observer):
    """Makes an interrupt during training take effect between two training steps.

    Raised anywhere, a KeyboardInterrupt can land inside a checkpoint save, an MLflow write or
    TensorFlow's own bookkeeping, and leave a lock held; raised from a callback after a step, it
    only unwinds ``model.fit``.
    """

    def keras_callbacks(self) -> Sequence[Any]:
        """A callback that holds an interrupt until the step under way ends."""
        import keras

        class _AtStepEnd(keras.callbacks.Callback):
            def on_train_begin(self, logs: Any = None) -> None:
                _Signals.deferring, _Signals.pending = True, None

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                _raise_pending()

            def on_train_end(self, logs: Any = None) -> None:
                _raise_pending()
                _Signals.deferring = False

        return [_AtStepEnd()]


def _raise_pending() -> None:
    """Raise the interrupt that arrived during the step, if any."""
    kind = _Signals.pending
    if kind is not None:
        _Signals.deferring, _Signals.pending = False, None
        raise kind()


def _interrupted(inv: Invocation) -> str:
    """What an interrupt did, in one message."""
    if inv.study:
        return (
            f"[bold red]interrupted[/]: the finished trials stay in study {escape(inv.study)}; the same "
            f"ecgvgg tune command with --study {escape(inv.study)} continues it"
        )
    if inv.run_id is None:
        return "[bold red]interrupted[/] before any run was created"
    if inv.resume_hint:
        return (
            f"[bold red]interrupted[/]: run {inv.run_id} was marked KILLED; continue it with\n  "
            f"{escape(inv.resume_hint)} --resume {inv.run_id}"
        )
    return f"[bold red]interrupted[/]: run {inv.run_id} was marked KILLED"


@contextmanager
def guard(inv: Optional[Invocation] = None) -> Iterator[Invocation]:
    """Turn bad input into exit status 2 with one clear line, and SIGTERM into a clean interrupt."""
    inv = inv or Invocation()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    try:
        yield inv
    except typer.Exit:
        raise
    except (DataError, ConfigError) as exc:
        if inv.debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(_one_line(exc, 1000))}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt as exc:
        err_console.print(_interrupted(inv), soft_wrap=True)
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
    except Exception as exc:
        if inv.debug:
            raise
        err_console.print(
            f"[bold red]failed:[/] {type(exc).__name__}: {escape(_one_line(exc))} (run with --debug for the traceback)",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    finally:
        _Signals.deferring, _Signals.pending = False, None
        for sig, handler in previous.items():
            signal.signal(sig, handler)

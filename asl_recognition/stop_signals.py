"""How a process is asked to stop: SIGTERM and SIGINT set a flag that a CLI's loops poll
(:func:`stop_on_signals`), or end a ClearML task like an exception
(:func:`install_signal_handlers`, then :func:`arm_stop_deadline` once ``Task.init`` has chained
its own hook).

Standard library only: the CI enqueue job installs just what the pipeline script imports.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_DEADLINE_S = 8.0  # SIGTERM to exit, at most (a supervisor's usual grace is 10 s)


class StopFlag:
    """Set by SIGTERM or SIGINT once installed, so a CLI's loop ends and stops its children
    in order; calling the flag says whether a stop was asked for."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def install(self) -> "StopFlag":
        handle_stop_signals(self._set)
        return self

    def _set(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum

    def __call__(self) -> bool:
        return self.signal is not None


def handle_stop_signals(
    handler: Callable[[int, FrameType | None], object], keep_installed: bool = False
) -> None:
    """Install ``handler`` for SIGTERM (process managers, containers) and SIGINT (Ctrl-C).

    Only the main thread can install handlers; elsewhere this does nothing. ``keep_installed``
    leaves a handler someone else already installed in place (only defaults are replaced).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        default = signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler, None)
        if default or not keep_installed:
            signal.signal(sig, handler)


def stop_on_signals() -> StopFlag:
    """A :class:`StopFlag` installed for SIGTERM and SIGINT: how the CLIs wait to be stopped."""
    return StopFlag().install()


def _stop_on_signal(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGINT end the task like an exception: ``finally`` and ClearML's close run."""
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Make SIGTERM and SIGINT stop the process even after ``Task.init``.

    ClearML chains to the handler it finds at ``Task.init`` and treats ``SIG_DFL`` as none
    (``exit_hooks.signal_handler``: ``if not org_handler``), so with the default in place a
    SIGTERM is swallowed. A real handler installed first lets ClearML record the abort and then
    stop the process.
    """
    handle_stop_signals(_stop_on_signal, keep_installed=True)


def arm_stop_deadline(seconds: float = STOP_DEADLINE_S) -> None:
    """After ``Task.init``: a SIGTERM ends the process within ``seconds`` whatever happens.

    ClearML's hook first closes the task (flushing logs and events), which can take longer
    than a supervisor waits on a busy machine; past the deadline the process exits with the
    signal's code, the task's record written as far as it got.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    hook = signal.getsignal(signal.SIGTERM)

    def deadline_then_hook(signum: int, frame: Any) -> None:
        timer = threading.Timer(seconds, os._exit, args=(128 + signum,))
        timer.daemon = True
        timer.start()
        if callable(hook):
            hook(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, deadline_then_hook)

"""A supervisor that restarts a dead service (tritonserver) with exponential backoff, a bounded
number of times in a row, each death and restart logged; in the caller's loop (the launcher,
stopped by the flag of :mod:`~asl_recognition.stop_signals`) or in a thread beside other work
(the live page)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from asl_recognition.processes import ChildError, describe_exit, sleep_unless

LOG = logging.getLogger(__name__)


@dataclass
class RestartPolicy:
    """Restart a dead service after 1, 2, 4 ... s (capped), at most ``max_restarts`` in a row.

    A service that then stays up for ``stable_after`` seconds has recovered: the count restarts.
    """

    max_restarts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    stable_after: float = 120.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** max(0, attempt - 1))


class Restartable(Protocol):
    """What :func:`supervise` needs of a service (a :class:`Child` or a wrapper of one)."""

    @property
    def log_path(self) -> Path | None: ...

    def start(self) -> object: ...

    def wait_ready(self, timeout: float, should_stop: Callable[[], bool]) -> object: ...

    def running(self) -> bool: ...

    def stop(self, timeout: float | None = None) -> int | None: ...


def supervise(
    service: Restartable,
    should_stop: Callable[[], bool],
    policy: RestartPolicy,
    ready_timeout: float,
    name: str,
    log: logging.Logger = LOG,
) -> int:
    """Keep a started, ready service running until ``should_stop()``; 1 once restarts run out.

    Each death and restart is logged with the exit (code or signal) and the service's log path.
    """
    attempt, up_since, failed = 0, time.monotonic(), None
    while not should_stop():
        if service.running():
            time.sleep(0.2)
            continue
        # stop() reaps the dead service (and what it left) and says how it ended
        how = describe_exit(service.stop() if failed is None else failed)
        failed = None
        if time.monotonic() - up_since >= policy.stable_after:
            attempt = 0
        attempt += 1
        if attempt > policy.max_restarts:
            log.error(
                "error: %s exited with %s after %d restarts in a row; giving up; log %s",
                name, how, policy.max_restarts, service.log_path,
            )  # fmt: skip
            return 1
        delay = policy.delay(attempt)
        log.warning(
            "%s exited with %s; restart %d/%d in %.1f s (log %s)",
            name, how, attempt, policy.max_restarts, delay, service.log_path,
        )  # fmt: skip
        if sleep_unless(delay, should_stop):
            break
        up_since = time.monotonic()
        try:
            service.start()
            service.wait_ready(ready_timeout, should_stop)
        except ChildError as exc:
            if should_stop():  # asked to stop while it started: not a failed restart
                log.info("restart %d left unfinished: asked to stop", attempt)
                break
            log.warning("restart %d failed: %s", attempt, str(exc).splitlines()[0])
            failed = service.stop(0)
            continue
        log.warning("%s is ready again (restart %d)", name, attempt)
    return 0


@dataclass
class Supervision:
    """A supervisor running in a thread; ``gave_up`` once its restarts ran out."""

    thread: threading.Thread
    gave_up: bool = False


@contextlib.contextmanager
def supervised(
    service: Restartable,
    name: str,
    log: logging.Logger = LOG,
    policy: RestartPolicy | None = None,
    ready_timeout: float = 120.0,
    on_give_up: Callable[[], object] | None = None,
) -> Iterator[Supervision]:
    """:func:`supervise` in a thread for the ``with`` block, for a service that a program uses
    while it does other work (the live page's Triton); the thread ends before the block does.
    ``on_give_up`` runs in that thread once the restarts ran out (the page ends itself)."""
    stop = threading.Event()

    def run() -> None:
        try:
            code = supervise(
                service, stop.is_set, policy or RestartPolicy(), ready_timeout, name, log
            )
        except Exception:  # a restart that failed otherwise (a binary gone, a full disk)
            log.exception("error: supervising %s failed; it is not restarted again", name)
            code = 1
        if code:
            supervision.gave_up = True
            if on_give_up is not None and not stop.is_set():
                on_give_up()

    supervision = Supervision(threading.Thread(target=run, name=f"supervise-{name}", daemon=True))
    supervision.thread.start()
    try:
        yield supervision
    finally:
        _stop_and_join(stop, supervision.thread)


def _stop_and_join(stop: threading.Event, thread: threading.Thread) -> None:
    """Stop the supervisor and wait for it, even through a second Ctrl-C (re-raised after): the
    caller stops the service next, which must not run beside a restart in progress."""
    interrupted = False
    while thread.is_alive():
        try:
            stop.set()
            thread.join()
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt

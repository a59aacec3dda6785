"""Child processes (Triton, Prometheus, Alertmanager, pipeline steps), started and stopped one way.

mirakuru does the process work: it starts each child in its own session, marks it and whatever
it spawns with an environment variable, stops it with a signal to its process group and SIGKILL
after a grace period, and kills marked leftovers when this interpreter exits. This module adds
what mirakuru does not do:

- output read from a pipe and written to a log file as it arrives
  (:mod:`~asl_recognition.child_output`);
- a readiness wait on an HTTP URL that notices an early exit, can be cancelled, and fails with
  one line naming the command and the log tail; or a wait for the child to run to completion;
- a child that dies with this process, its own children included, even on ``kill -9``
  (``die_with_parent``: see :mod:`asl_recognition.reaper`);
- an exit described as a code or a signal name.

The supervisor that restarts a dead service is :mod:`asl_recognition.supervision`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from mirakuru import SimpleExecutor
from mirakuru.exceptions import ProcessFinishedWithError

from asl_recognition.child_output import Output, Pump

REAPER = Path(__file__).with_name("reaper.py")
LOG = logging.getLogger(__name__)


def redacted(text: str, secrets: Iterable[str], mark: str = "***") -> str:
    """``text`` with every one of ``secrets`` shown as ``mark``."""
    for secret in secrets:
        text = text.replace(secret, mark)
    return text


class _HideSecrets(logging.Filter):
    """mirakuru logs every command it starts (DEBUG, ``Starting process: ...``): a child's
    ``secrets_in_command`` are shown there as ``***`` too, whatever logging is configured."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        hidden = redacted(text, self.secrets)
        if hidden != text:
            record.msg, record.args = hidden, ()
        return True


_HIDDEN = _HideSecrets()
logging.getLogger("mirakuru.base").addFilter(_HIDDEN)  # a logger's filter sees its own records


def never() -> bool:
    """The default ``should_stop``: nothing cancels the wait."""
    return False


class ChildError(RuntimeError):
    """A child could not start, exited before it was ready, or was not ready in time."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def describe_exit(code: int | None) -> str:
    """``code 3`` or ``signal SIGSEGV`` (Popen reports death by a signal as minus its number)."""
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def http_ready(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers a GET with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


class _Executor(SimpleExecutor):
    """mirakuru's executor. :class:`Child` waits for readiness itself (cancellable, with the log
    tail in its error), so mirakuru's ``timeout`` only sets how long a stop waits before SIGKILL.
    """

    @property
    def envvars(self) -> dict[str, str]:
        """Exactly the environment the child was given, plus mirakuru's mark: mirakuru merges it
        into this process's, which would bring back a variable left out on purpose (a key)."""
        merged = super().envvars
        if self._envvars:
            for name in set(os.environ) - set(self._envvars):
                merged.pop(name, None)
        return merged

    death_signal: int | None = None  # sent to the child by the kernel when its parent dies

    @property
    def _popen_kwargs(self) -> dict:
        """mirakuru's, with ``PR_SET_PDEATHSIG`` asked for in the child beside its ``setsid``."""
        kwargs = super()._popen_kwargs
        if self.death_signal is not None:
            kwargs["preexec_fn"] = _die_with(os.getpid(), self.death_signal)
        return kwargs

    def stop_within(self, grace: float) -> None:
        """Signal the process group, wait ``grace`` s, SIGKILL what is left; reap the child."""
        self._timeout = grace  # mirakuru's stop waits its `timeout` before it kills
        with contextlib.suppress(ProcessFinishedWithError):  # the caller reads the exit code
            self.stop()


def _die_with(parent: int, death_signal: int) -> Callable[[], None]:
    """The child's preexec: its own session, and ``death_signal`` from the kernel once the
    thread that forks it ends (prctl(2)); a parent gone before that exits the child at once."""
    import ctypes

    from asl_recognition.reaper import PR_SET_PDEATHSIG

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not after the fork

    def preexec() -> None:
        os.setsid()
        prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _answers(url: str) -> bool:
    """Something already accepts connections on the URL's port (another server, a stale one)."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=1):
            return True
    except OSError:
        return False


class Child:
    """One child process: started in its own session with its output pumped to log files,
    waited for (ready URL, or exit), stopped as a process group; ``returncode`` once it ended.

    ``stderr=None`` sends stderr to the stdout log. ``grace`` is how long :meth:`stop` waits
    after SIGTERM before SIGKILL. ``die_with_parent`` (Linux) runs the command under
    :mod:`asl_recognition.reaper`, so that it and its whole tree are killed when this process
    dies, however it dies; start such a child from the main thread (the kernel watches the
    thread that forked it). ``death_signal`` (Linux) asks the kernel for that signal to the
    command itself when this process dies (same thread rule), no guard in between: the command
    stays this process's child (a tritonserver's stubs are found as its children), but its own
    children are not covered. ``pass_fds`` stay open in the child (a lock it must hold too).
    ``secrets_in_command`` (a key on the command line) are shown as ``***`` in :meth:`failure`.
    ``env`` is the child's whole environment (None: this process's).
    """

    def __init__(
        self,
        command: Sequence[str | Path],
        stdout: Output,
        stderr: Output | None = None,
        *,
        name: str | None = None,
        ready_url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        grace: float = 10.0,
        die_with_parent: bool = False,
        death_signal: int | None = None,
        pass_fds: Sequence[int] = (),
        secrets_in_command: Sequence[str] = (),
    ) -> None:
        self.command = [str(part) for part in command]
        self.secrets_in_command = [secret for secret in secrets_in_command if secret]
        _HIDDEN.secrets.update(self.secrets_in_command)
        self.name = name or Path(self.command[0]).name
        self.outputs = [stdout] + ([stderr] if stderr is not None else [])
        self.ready_url = ready_url
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        self.grace = grace
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self.death_signal = death_signal if sys.platform.startswith("linux") else None
        self.pass_fds = tuple(pass_fds)
        self.returncode: int | None = None
        self._executor: _Executor | None = None
        self._pumps: list[Pump] = []

    @property
    def process(self) -> subprocess.Popen | None:
        """The running (or exited, not yet stopped) process; None before start and after stop."""
        return self._executor.process if self._executor is not None else None

    @property
    def log_path(self) -> Path:
        """The log its errors go to (stderr's when it has its own)."""
        return self.outputs[-1].log

    def start(self) -> "Child":
        """Start the child (not waiting for it); refuse when its ready URL already answers."""
        if self._executor is not None:
            return self
        if self.ready_url and _answers(self.ready_url):
            raise ChildError(f"{self.name}: {self.ready_url} already answers; pick another port")
        pipes = [os.pipe() for _ in self.outputs]
        pumps: list[Pump] = []
        try:
            for (read_fd, _), output in zip(pipes, self.outputs):
                pumps.append(Pump(read_fd, output, f"{self.name}-output"))
            executor = self._spawn(pipes[0][1], pipes[1][1] if len(pipes) > 1 else None)
        except BaseException:
            for pump in pumps:
                pump.log.close()
            for read_fd, _ in pipes:
                os.close(read_fd)
            raise
        finally:
            for _, write_fd in pipes:  # the child holds its copies: EOF comes when it exits
                os.close(write_fd)
        self._executor, self._pumps, self.returncode = executor, pumps, None
        for pump in pumps:
            pump.start()
        return self

    def _spawn(self, stdout: int, stderr: int | None) -> _Executor:
        """mirakuru starts it in a new session, marked so that leftovers die at our exit."""
        streams = {"stdin": subprocess.DEVNULL, "stdout": stdout}
        streams["stderr"] = subprocess.STDOUT if stderr is None else stderr
        command = self.command
        if self.die_with_parent:
            command = [sys.executable, "-I", "-S", str(REAPER), str(os.getpid()), *command]
        executor = _Executor(
            command,
            cwd=self.cwd,
            timeout=self.grace,
            envvars=self.env,
            popen_kwargs={"pass_fds": self.pass_fds},
            **streams,
        )
        executor.death_signal = self.death_signal
        return executor.start()

    def poll(self) -> int | None:
        """The exit code once the child has exited, else None."""
        process = self.process
        if process is not None and process.poll() is not None:
            self.returncode = process.returncode
        return self.returncode

    def running(self) -> bool:
        return self.process is not None and self.poll() is None

    def last_output(self) -> str:
        """The end (64 KiB) of what the child wrote to its last stream (stderr if separate)."""
        return self._pumps[-1].tail.decode("utf-8", "replace") if self._pumps else ""

    def tail(self, lines: int = 3) -> str:
        """Its last non-empty lines on one line (progress bars' redraws split into lines)."""
        text = self.last_output().replace("\r", "\n")
        return " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])

    def failure(self, what: str) -> str:
        """One line: the child's name, what happened, its command, its log and the log's end."""
        shown = redacted(shlex.join(self.command), self.secrets_in_command)
        return (
            f"{self.name} {what}: {shown}; "
            f"log {self.log_path} ends: {self.tail() or '(empty)'}"
        )

    def wait_ready(self, timeout: float, should_stop: Callable[[], bool] = never) -> "Child":
        """Block until ``ready_url`` answers 2xx (or, without one, return while it runs).

        Raises :class:`ChildError` (one line) when the child exits first, when ``timeout``
        passes, or when ``should_stop()`` turns true before it is ready (one last look: a stop
        that lands between two polls of a ready child is no failure); the caller stops it.
        """
        if self._executor is None:
            raise ChildError(f"{self.name} not started")
        deadline = time.monotonic() + timeout
        while not (stopped := should_stop()):
            code = self.poll()
            if code is not None:
                self._drain(5.0)  # the error and the caller's log reader see its last words
                raise ChildError(self.failure(f"exited with {describe_exit(code)}"), code)
            if self.ready_url is None or http_ready(self.ready_url):
                return self
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if stopped and self.ready_url is not None and http_ready(self.ready_url):
            return self  # ready before the stop was seen: no failure to report
        # a stop asked for meanwhile (SIGTERM) is no timeout: saying so had misled a reader
        why = "stopped before it was ready" if stopped else f"not ready after {timeout:g} s"
        raise ChildError(self.failure(why))

    def wait(self, drain: float = 30.0) -> int:
        """Block until the child exits and its output is written (a leftover grandchild that
        keeps the pipe open gets ``drain`` seconds, then is stopped); return the exit code."""
        process = self.process
        if process is None:
            raise ChildError(f"{self.name} not started")
        process.wait()
        self._drain(drain)
        code = self.stop()
        assert code is not None
        return code

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM to the child's process group, SIGKILL after ``grace`` s (default
        ``self.grace``), reaped; return its exit code (the last one if it was stopped already)."""
        executor, process = self._executor, self.process
        if executor is not None and process is not None:
            executor.stop_within(self.grace if grace is None else grace)
            self.returncode = process.returncode
        self._executor = None
        self._drain(5.0)
        return self.returncode

    def _drain(self, timeout: float) -> None:
        """Wait (bounded) until the output pumps have written everything the child said."""
        deadline = time.monotonic() + timeout
        for pump in self._pumps:
            pump.join(timeout=max(0.0, deadline - time.monotonic()))


def sleep_unless(seconds: float, should_stop: Callable[[], bool]) -> bool:
    """Sleep up to ``seconds``, waking early when ``should_stop()``; return ``should_stop()``."""
    deadline = time.monotonic() + seconds
    while not should_stop() and time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    return should_stop()

"""Run a command so that it, and everything it starts, dies with the process that started us.

    python -I -S reaper.py <parent pid> <command> [args ...]

:class:`asl_recognition.processes.Child` puts this in front of a command when asked to
(``die_with_parent``): a pipeline step must not outlive a runner killed with ``kill -9``, or it
goes on registering models that no run refers to. ``PR_SET_PDEATHSIG`` alone is not enough: the
kernel clears it in every forked child, so the step's own children (DataLoader workers, tools it
runs) would stay. This guard therefore

- asks the kernel for :data:`DEATH_SIGNAL` when its parent dies (``PR_SET_PDEATHSIG``, prctl(2));
- becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``), so that the command's orphaned
  descendants are re-parented to it instead of to init and can still be found;
- on that signal SIGKILLs every descendant, until none is left, and exits;
- otherwise waits for the command (reaping orphans as they end), SIGKILLs what it left running
  (a step killed by the OOM killer left its pool's workers, re-parented to init, for ever) and
  exits as it did: the same code, or the same signal.

SIGTERM/SIGINT/SIGHUP do not stop the guard: a stop signals the whole process group, the
command gets the signal itself and the guard ends when it does. The parent is the *thread* that
forked the guard (prctl(2)), so start it from a thread that lives as long as the process.

Linux only. Standard library only and started with ``-I -S``: it starts in a few tens of ms and
imports nothing from the command's working directory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
DEATH_SIGNAL = signal.SIGUSR1
KILL_WITHIN_S = 5.0


class ParentDied(Exception):
    """Raised in the main thread by the parent-death signal."""


def prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}): {os.strerror(errno)}")


def _stat(pid: str) -> tuple[str, int]:
    """(state, parent pid) of a process from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def live_descendants(root: int) -> list[int]:
    """Every process below ``root`` that has not exited yet (zombies aside)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state, ppid = _stat(entry)
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append((int(entry), state))
    found, todo = [], [root]
    while todo:
        for pid, state in children.get(todo.pop(), []):
            todo.append(pid)
            if state not in ("Z", "X"):
                found.append(pid)
    return found


def reap() -> None:
    """Collect every child that has exited (orphans re-parented to us included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_descendants() -> None:
    """SIGKILL the whole tree below us; re-scan until it is empty (a child may fork meanwhile)."""
    deadline = time.monotonic() + KILL_WITHIN_S
    while time.monotonic() < deadline:
        pids = live_descendants(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
        reap()


def wait_for(pid: int) -> int:
    """Wait for the command, reaping re-parented orphans meanwhile; its wait status."""
    while True:
        ended, status = os.waitpid(-1, 0)
        if ended == pid:
            return status


def exit_like(status: int) -> None:
    """End this process with the command's exit code, or by the signal that ended it."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        if -code != signal.SIGKILL:  # its handler cannot be set (nor needs to be)
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
        code = 128 - code
    os._exit(code)


def die_with_parent() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {DEATH_SIGNAL})
    kill_descendants()
    os._exit(128 + signal.SIGKILL)


def main(argv: list[str]) -> None:
    parent, command = int(argv[1]), argv[2:]

    def on_parent_death(_signum: int, _frame: object) -> None:
        if os.getppid() != parent:  # our parent is gone (not a stray signal)
            raise ParentDied

    signal.signal(DEATH_SIGNAL, on_parent_death)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)  # the command gets it too; we end when it ends
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL)
        if os.getppid() != parent:  # it died before the kernel was asked to tell us
            raise ParentDied
        pid = os.posix_spawnp(command[0], command, os.environ)
    except OSError as exc:  # no such program, or prctl refused: one line, as a shell says it
        print(f"{command[0]}: {exc.strerror}", file=sys.stderr)
        os._exit(127)
    except ParentDied:
        die_with_parent()
    try:
        status = wait_for(pid)
        signal.pthread_sigmask(signal.SIG_BLOCK, {DEATH_SIGNAL})
        kill_descendants()  # what the command left running (its pool's workers, when killed)
        exit_like(status)
    except ParentDied:
        die_with_parent()


if __name__ == "__main__":
    main(sys.argv)

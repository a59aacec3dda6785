"""Advisory file locks that die with their holder (``fcntl.flock``), for writers on one machine.

A flock belongs to an open file description, not to a path or a pid: the kernel drops it when
the last descriptor of that description closes, which a ``kill -9`` does too, so a crashed
holder never leaves a stale lock behind (a pid file would). A descriptor handed to a child
(``pass_fds``) keeps the lock held for as long as the child lives, which is how a pipeline run
stays locked while a step of it is still alive.

Two descriptions of the same file conflict even inside one process, so threads and tests see
what two processes would.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

POLL_S = 0.05


class LockTimeout(TimeoutError):
    """A blocking lock was not granted in time (its holder is still working)."""


class FileLock:
    """An exclusive flock on ``path`` (created when missing); the holder's pid is written in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self, timeout: float | None = 0.0) -> bool:
        """Take the lock: ``timeout`` 0 tries once, None waits for ever; False if not granted."""
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        """Close this descriptor; the lock ends once no child holds a copy of it either."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def fileno(self) -> int:
        if self.fd is None:
            raise RuntimeError(f"{self.path} is not locked by this process")
        return self.fd

    def still_at_path(self) -> bool:
        """Whether the locked file is still the one at ``path``: a lock taken on a file another
        process unlinked meanwhile guards nothing (a new file of that name locks apart)."""
        try:
            return os.fstat(self.fileno()).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def __enter__(self) -> "FileLock":
        if not self.acquire(timeout=None):
            raise LockTimeout(f"could not lock {self.path}")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def holder(path: str | Path) -> str:
    """The pid that took the lock last (as written in the file), for messages; '?' if unknown."""
    try:
        return Path(path).read_text(encoding="utf-8").strip() or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def exclusive(path: str | Path, timeout: float = 60.0) -> Iterator[FileLock]:
    """Hold ``path``'s lock around a short read-modify-write (a version number, an index file).

    Waits up to ``timeout`` s for another writer, then raises :class:`LockTimeout` naming the
    file and the pid that holds it.
    """
    lock = FileLock(path)
    if not lock.acquire(timeout=timeout):
        raise LockTimeout(
            f"{path} stayed locked for {timeout:g} s (held by pid {holder(path)}); "
            "another writer is still working"
        )
    try:
        yield lock
    finally:
        lock.release()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs now (a permission error means it does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

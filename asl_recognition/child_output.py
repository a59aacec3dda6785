"""A child process's output: read from a pipe and written to a log file (mode 600) as it
arrives, optionally also to a console stream and line by line through a redaction filter, with
the end kept in memory for error messages.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

TAIL_BYTES = 65536


@dataclass
class Output:
    """Where one of a child's streams goes: a log file (mode 600), optionally a console stream.

    ``redact`` filters each complete line before it is written anywhere; without it bytes are
    copied as they arrive, so progress bars that redraw with ``\\r`` stay live.
    """

    log: Path
    console: IO[str] | None = None
    append: bool = False
    redact: Callable[[str], str] | None = None


class Pump(threading.Thread):
    """Copies a pipe to an :class:`Output` until every writer has closed it."""

    def __init__(self, fd: int, output: Output, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.fd, self.output = fd, output
        self.tail = bytearray()
        output.log.parent.mkdir(parents=True, exist_ok=True)
        if output.log.is_symlink():  # a link put there: replaced, never written through (its
            output.log.unlink()  # target, any file the workspace's owner named, was emptied)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
        flags |= os.O_APPEND if output.append else os.O_TRUNC
        self.log = open(os.open(output.log, flags, 0o600), "wb", buffering=0)

    def run(self) -> None:
        pending = b""
        with self.log, open(self.fd, "rb", buffering=0, closefd=True):
            while chunk := os.read(self.fd, 65536):
                if self.output.redact is not None:
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    chunk = b"".join(self._redact(line + b"\n") for line in lines)
                self._write(chunk)
            if pending:
                self._write(self._redact(pending))

    def _redact(self, line: bytes) -> bytes:
        assert self.output.redact is not None
        return self.output.redact(line.decode("utf-8", "replace")).encode("utf-8")

    def _write(self, chunk: bytes) -> None:
        self.log.write(chunk)
        self.tail.extend(chunk)
        del self.tail[: max(0, len(self.tail) - TAIL_BYTES)]
        console = self.output.console
        if console is None or not chunk:
            return
        binary = getattr(console, "buffer", None)
        if binary is not None:
            console.flush()  # what was written as text first stays first
            binary.write(chunk)
            binary.flush()
        else:
            console.write(chunk.decode("utf-8", "replace"))

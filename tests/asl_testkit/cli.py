"""A project CLI (``python -m module``) run as a real child process by a test, never leaked."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from asl_recognition.paths import REPO_ROOT


@contextmanager
def cli_process(
    module: str,
    *args: str | Path | int,
    env: Mapping[str, str] | None = None,
    stderr: int = subprocess.PIPE,
) -> Iterator[subprocess.Popen]:
    """``python -m module args`` from the repo root with text pipes (``stderr=STDOUT`` merges
    them); killed and reaped on the way out if the test left it running."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *(str(arg) for arg in args)],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

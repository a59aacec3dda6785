"""Jobs for ``workers.run_pool`` tests: module-level, so spawned workers import them by name."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def square_or_die(job: tuple[str, int, bool]) -> int:
    """``i * i``; job 5 kills its own worker with SIGKILL (once, or every time ``always``)."""
    folder, i, always = job
    marker = Path(folder) / "killed"
    if i == 5 and (always or not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return i * i

"""Folders of one ``validate_raw`` run that no other run may share: its zip extractions and its
report. Runs may overlap (two agents on one workspace), so neither wipes nor overwrites what the
other reads; a run killed with ``kill -9`` leaves a folder that the next run removes.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from asl_recognition.locks import FileLock
from asl_recognition.paths import workspace

SCRATCH_PREFIX = "run-"
# Before per-run folders, zips were extracted to extracted/<sha256[:16]>[-<source>] (and staged
# in .<that>.part<pid>), never removed: the next run removes them.
LEGACY_EXTRACT = re.compile(r"\.?[0-9a-f]{16}(-.+)?(\.part\d+)?")


def remove_dead_scratch(parent: Path) -> list[Path]:
    """Remove the extraction folders of runs that died (``kill -9``); returns them.

    A run's ``<folder>.lock`` is flocked for as long as it lives (the kernel drops the lock when
    it dies, whatever its pid becomes), so a lock this process can take belongs to a dead run.
    """
    removed = []
    for folder in parent.iterdir():  # the shared <sha>[-name] folders of older versions
        if LEGACY_EXTRACT.fullmatch(folder.name) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    for lock_path in sorted(parent.glob(f"{SCRATCH_PREFIX}*.lock")):
        lock = FileLock(lock_path)
        if not lock.acquire(timeout=0):
            continue  # its run is alive
        try:
            if lock.still_at_path():  # not already removed by another run starting now
                folder = lock_path.with_suffix("")
                shutil.rmtree(folder, ignore_errors=True)
                lock_path.unlink(missing_ok=True)
                removed.append(folder)
        finally:
            lock.release()
    return removed


@contextmanager
def run_scratch(parent: Path | None = None) -> Iterator[Path]:
    """This run's own folder for its zip extractions (created on first use), removed at the end.

    Never shared: a run on the same zip at the same time cannot wipe, or read half of, this one's
    files. Locked while the run lives, so one killed mid-run is never reused, and its folder is
    removed by the next run that starts.
    """
    parent = parent or workspace() / "extracted"
    parent.mkdir(parents=True, exist_ok=True)
    remove_dead_scratch(parent)
    while True:
        lock = FileLock(parent / f"{SCRATCH_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.lock")
        if lock.acquire(timeout=0) and lock.still_at_path():
            break
        lock.release()  # a starting run took this fresh name for a dead one's: another name
    folder = lock.path.with_suffix("")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.path.unlink(missing_ok=True)
        lock.release()


def check_report_name(name: str) -> str:
    """``name`` if it names a folder inside ``reports/``, else a one-line ValueError.

    A dataset name becomes the report folder's name: ``../../x`` or ``/etc/x`` (a web-UI edit of
    ``Args/name``) had written report.json, scan.csv and the Data Docs outside the workspace.
    """
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name.strip() or name.startswith(("/", "\\")) or ".." in parts:
        raise ValueError(
            f"--name {name!r}: a dataset name names its report folder under reports/, so it "
            "cannot be empty, absolute or hold '..'"
        )
    return name


def run_report_dir(name: str) -> Path:
    """``reports/<name>/<UTC time>-<random>/``: a folder per run, so overlapping runs never write
    (or upload) each other's report; the names sort by start time."""
    check_report_name(name)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return workspace() / "reports" / name / f"{stamp}-{secrets.token_hex(3)}"

"""Per-item work on every core: a spawn pool with a progress bar, used only when it pays off.

The data stage's scans and resizes and the hand measurements run through :func:`run_pool`.
Spawn, not fork: the parent may hold ClearML threads, and forking a threaded process can hang.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")


def default_workers() -> int:
    """The cores this process may use, at most 2 (the per-item work is CPU-bound). Linux says
    which cores a process may use; macOS and Windows only how many the machine has."""
    usable = getattr(os, "sched_getaffinity", None)
    cores = len(usable(0)) if usable is not None else (os.cpu_count() or 1)
    return max(1, min(2, cores))


def run_pool(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int | None = None,
    desc: str = "files",
    progress: bool = True,
    min_jobs: int = 1,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> list[R]:
    """``[fn(job) for job in jobs]`` in input order; in a spawn pool of ``workers`` processes
    when there are at least ``min_jobs`` jobs (below, starting workers costs more than it saves).

    ``fn`` is pickled by name into the workers; ``initializer(*initargs)`` runs once in each (a
    model to load, say). Run here, ``initializer`` is not called: ``fn`` must work without it.
    """
    from tqdm import tqdm

    workers = default_workers() if workers is None else workers
    bar = dict(total=len(jobs), desc=desc, unit="file", disable=not progress, mininterval=1.0)
    if workers <= 1 or len(jobs) < min_jobs:
        return [fn(j) for j in tqdm(jobs, **bar)]
    context = mp.get_context("spawn")
    start = (os.getpid(), initializer, initargs)
    with ProcessPoolExecutor(workers, context, _start_worker, start) as pool:
        chunk = max(4, len(jobs) // (workers * 8))
        return list(tqdm(pool.map(fn, jobs, chunksize=chunk), **bar))


def _start_worker(
    parent: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]
) -> None:
    """Die with the process that started the pool: a step killed with ``kill -9`` (or by the
    OOM killer) left its workers, re-parented to init, for ever (Linux: the kernel's parent-death
    signal; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        from asl_recognition.reaper import PR_SET_PDEATHSIG, prctl

        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # it died before the kernel was asked to tell us
            os._exit(1)
    if initializer is not None:
        initializer(*initargs)

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
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")


def default_workers() -> int:
    """The cores this process may use, at most 2 (the per-item work is CPU-bound). Linux says
    which cores a process may use; macOS and Windows only how many the machine has."""
    usable = getattr(os, "sched_getaffinity", None)
    cores = len(usable(0)) if usable is not None else (os.cpu_count() or 1)
    return max(1, min(2, cores))


class WorkerLostError(RuntimeError):
    """A pool worker died twice (a signal: the OOM killer, ``kill -9``); the message is one
    line, where ``concurrent.futures`` gave a traceback naming neither the step nor a file."""


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
    A worker that dies (``kill -9``, the OOM killer) had thrown away every result of the step:
    the jobs not yet answered run once more in a fresh pool, then :class:`WorkerLostError`.
    """
    from tqdm import tqdm

    workers = default_workers() if workers is None else workers
    bar = dict(total=len(jobs), desc=desc, unit="file", disable=not progress, mininterval=1.0)
    if workers <= 1 or len(jobs) < min_jobs:
        return [fn(j) for j in tqdm(jobs, **bar)]
    start = (os.getpid(), initializer, initargs)
    done: list[R] = []
    with tqdm(**bar) as shown:
        for tries_left in (1, 0):
            try:
                _pooled(fn, jobs[len(done) :], workers, start, done, shown.update)
                return done
            except BrokenProcessPool as exc:
                if not tries_left:
                    raise WorkerLostError(
                        f"{desc}: a worker process died twice, {len(done)} of {len(jobs)} "
                        f"done (killed by a signal: out of memory or kill -9?): {exc}"
                    ) from None
    return done


def _pooled(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int,
    start: tuple[Any, ...],
    out: list[R],
    tick: Callable[[], Any],
) -> None:
    """Append ``fn(job)`` for ``jobs`` to ``out`` in order, as the pool answers them."""
    with ProcessPoolExecutor(workers, mp.get_context("spawn"), _start_worker, start) as pool:
        chunk = max(4, len(jobs) // (workers * 8))
        for result in pool.map(fn, jobs, chunksize=chunk):
            out.append(result)
            tick()


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

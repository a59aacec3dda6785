"""The hands of many photos on every core: one ``HandLandmarker`` per spawned worker process.

A photo costs about 35 ms of single-threaded LiteRT (one thread per interpreter, see
``landmarker.TfliteModel``), so on a laptop's cores a few hundred photos are worth a pool. Each
worker builds its landmarker from the parent's :meth:`HandLandmarker.settings` and model folder,
so it finds exactly the hands the parent's landmarker would; results come back in input order.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from asl_recognition.hands.landmarker import HandLandmarker
from asl_recognition.hands.passes import Pass

R = TypeVar("R")
# Below this many photos, starting workers (imports, model load: ~2 s each) costs more than
# it saves.
POOL_MIN_PHOTOS = 64
_landmarker: HandLandmarker | None = None


def default_workers() -> int:
    """The cores this process may use, at most 4 (measuring is CPU-bound, one thread each)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def landmarker_arguments(landmarker: HandLandmarker) -> dict[str, Any]:
    """What rebuilds ``landmarker`` in another process: its model folder and settings."""
    settings = landmarker.settings()
    return {
        "models_dir": str(landmarker.models_dir),
        "variant": settings["variant"],
        "min_detection": settings["min_detection"],
        "min_presence": settings["min_presence"],
        "passes": tuple(Pass(*p) for p in settings["passes"]),  # type: ignore[union-attr]
    }


def _start_worker(arguments: dict[str, Any]) -> None:
    global _landmarker
    _landmarker = HandLandmarker(**arguments)


def _in_worker(job: tuple[Callable[[HandLandmarker, Path], R], Path]) -> R:
    measure, path = job
    assert _landmarker is not None, "worker started without a landmarker"
    return measure(_landmarker, path)


def map_photos(
    measure: Callable[[HandLandmarker, Path], R],
    landmarker: HandLandmarker,
    paths: Sequence[Path],
    workers: int | None = None,
    desc: str = "hands",
    progress: bool = True,
) -> list[R]:
    """``[measure(landmarker, p) for p in paths]``, spread over worker processes when it pays.

    ``measure`` must be a module-level function (it is pickled by name into the workers).
    """
    from tqdm import tqdm

    workers = default_workers() if workers is None else workers
    bar = dict(total=len(paths), desc=desc, unit="img", disable=not progress, mininterval=1.0)
    if workers <= 1 or len(paths) < POOL_MIN_PHOTOS:
        return [measure(landmarker, Path(p)) for p in tqdm(paths, **bar)]
    # spawn, not fork: the parent may hold ClearML threads; forking a threaded process can hang.
    context = mp.get_context("spawn")
    arguments = landmarker_arguments(landmarker)
    with ProcessPoolExecutor(workers, context, _start_worker, (arguments,)) as pool:
        jobs = [(measure, Path(p)) for p in paths]
        chunk = max(4, len(jobs) // (workers * 8))
        return list(tqdm(pool.map(_in_worker, jobs, chunksize=chunk), **bar))

"""The hands of many photos on every core: one ``HandLandmarker`` per spawned worker process.

A photo costs about 35 ms of single-threaded LiteRT (one thread per interpreter, see
``landmarker.TfliteModel``), so on a laptop's cores a few hundred photos are worth a pool. Each
worker builds its landmarker from the parent's :meth:`HandLandmarker.settings` and model folder,
so it finds exactly the hands the parent's landmarker would; results come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from asl_recognition.hands.landmarker import HandLandmarker, detector_arguments
from asl_recognition.workers import default_workers, run_pool

R = TypeVar("R")
# Below this many photos, starting workers (imports, model load: ~2 s each) costs more than
# it saves.
POOL_MIN_PHOTOS = 64
_landmarker: HandLandmarker | None = None


def landmarker_arguments(landmarker: HandLandmarker) -> dict[str, Any]:
    """What rebuilds ``landmarker`` in another process: its model folder and settings."""
    arguments = detector_arguments(landmarker.settings())
    return {"models_dir": str(landmarker.models_dir), **arguments}


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
    paths = [Path(p) for p in paths]
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(paths) < POOL_MIN_PHOTOS:
        return run_pool(partial(measure, landmarker), paths, 1, desc, progress)
    jobs = [(measure, p) for p in paths]
    initargs = (landmarker_arguments(landmarker),)
    return run_pool(_in_worker, jobs, workers, desc, progress, 1, _start_worker, initargs)

"""Resize once at publish time: training reads small RGB JPEGs, not 200 px ones, every epoch."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from asl_recognition.data.scan import POOL_MIN_FILES
from asl_recognition.data.workers import preprocess_one


def preprocess_all(
    jobs: Sequence[tuple[str, str, int]], workers: int = 2, progress: bool = True
) -> list[str]:
    """Run :func:`preprocess_one` over all jobs, in a spawn pool when it pays off."""
    bar = dict(total=len(jobs), desc="preprocess", unit="img", disable=not progress, mininterval=1)
    if workers <= 1 or len(jobs) < POOL_MIN_FILES:
        return [preprocess_one(j) for j in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        chunk = max(16, len(jobs) // (workers * 8))
        return list(tqdm(pool.map(preprocess_one, jobs, chunksize=chunk), **bar))

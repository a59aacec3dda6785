"""Resize once at publish time: training reads small RGB JPEGs, not 200 px ones, every epoch."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from asl_recognition.data.scan import POOL_MIN_FILES
from asl_recognition.imageio import load_rgb

JPEG_QUALITY = 95


def preprocess_one(job: tuple[str, str, int]) -> str:
    """Decode (bounded, EXIF-upright, RGB), resize to size x size, save JPEG; return the phash."""
    import imagehash
    from PIL import Image

    source, target, size = job
    image = load_rgb(source)
    phash = str(imagehash.phash(image))  # of the full image, the same hash validation computed
    image = image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="JPEG", quality=JPEG_QUALITY)
    return phash


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

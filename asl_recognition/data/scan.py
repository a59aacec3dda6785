"""Scan every file of a folder or .zip into one table (one row per file, nothing skipped).

The table is what Great Expectations validates and what the quarantine rules read; litter is
recorded, not dropped, so the raw version can keep every file.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from tqdm import tqdm

from asl_recognition.classes import CLASSES
from asl_recognition.data.safe_extract import safe_extract_zip
from asl_recognition.imageio import MAX_PIXELS, ImageDecodeError, load_rgb, read_header

LITTER_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX"}
EXIF_ORIENTATION_TAG = 0x0112
COLUMNS = [
    "path",
    "class",
    "litter",
    "width",
    "height",
    "mode",
    "format",
    "bytes",
    "sha256",
    "phash",
    "exif_orientation",
    "error",
    "error_detail",
]
# Below this many files a process pool costs more to start than it saves.
POOL_MIN_FILES = 200


@dataclass
class ScanResult:
    table: pd.DataFrame
    root: Path  # where the files are (the folder, or the extraction folder of a zip)
    data_root: str  # relative POSIX path under root holding the <CLASS>/ folders ("" = root)


def is_litter(relpath: str) -> bool:
    """OS litter (.DS_Store, __MACOSX/, Thumbs.db) and hidden files/folders."""
    return any(
        part in LITTER_NAMES or part.startswith(".") for part in PurePosixPath(relpath).parts
    )


def list_files(root: Path) -> list[str]:
    """Every file under ``root`` (relative POSIX, sorted); links are listed, never followed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            full = Path(dirpath) / name
            if full.is_symlink() or full.is_file():
                out.append(full.relative_to(root).as_posix())
    return sorted(out)


def find_data_root(files: Sequence[str], classes: Sequence[str] = CLASSES) -> str:
    """Descend through single wrapper folders (``asl_train/A/...``) to the class folders."""
    prefix = ""
    known = set(classes)
    while True:
        rels = [
            f[len(prefix) + 1 :] if prefix else f
            for f in files
            if not is_litter(f) and (not prefix or f.startswith(prefix + "/"))
        ]
        top_dirs = {r.split("/", 1)[0] for r in rels if "/" in r}
        loose = [r for r in rels if "/" not in r]
        if len(top_dirs) != 1 or loose or top_dirs & known:
            return prefix
        folder = top_dirs.pop()
        prefix = f"{prefix}/{folder}" if prefix else folder


def class_of(relpath: str, data_root: str) -> str | None:
    """The class folder name (first component under the data root); None for loose files."""
    path = PurePosixPath(relpath)
    if data_root:
        if not path.is_relative_to(data_root):
            return None
        path = path.relative_to(data_root)
    return path.parts[0] if len(path.parts) > 1 else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _bomb_size(path: Path) -> tuple[int | None, int | None]:
    """The declared size of a refused image, read from its header only (pixels never decoded)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # header only: Image.open does not decode pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return img.size
    except Exception:  # noqa: BLE001 - the size is a courtesy for the report
        return None, None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def scan_file(args: tuple[str, str, str | None, bool, int]) -> dict[str, Any]:
    """One row: header facts without decoding, then a bounded full decode for errors and phash."""
    import imagehash

    root, relpath, cls, litter, max_pixels = args
    path = Path(root) / relpath
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(path=relpath, litter=litter)
    row["class"] = cls
    if path.is_symlink():  # never read through a link: it may point anywhere on the machine
        row.update(error="symlink", error_detail=f"{relpath} is a symbolic link")
        return row
    row.update(bytes=path.stat().st_size, sha256=_sha256(path))
    if litter:
        return row  # recorded and kept in the raw version, never decoded
    try:
        header = read_header(path, max_pixels)
        row.update(
            width=header.size[0],
            height=header.size[1],
            mode=header.mode,
            format=header.format,
        )
        try:
            row["exif_orientation"] = int(header.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
            row["exif_orientation"] = 1
        header.close()
        image = load_rgb(path, max_pixels)
        row["phash"] = str(imagehash.phash(image))
    except ImageDecodeError as exc:
        row.update(error=exc.reason, error_detail=exc.detail[:300])
        if exc.reason == "decompression_bomb":
            row["width"], row["height"] = _bomb_size(path)
    except Exception as exc:  # noqa: BLE001 - e.g. a mode Pillow cannot convert: record, go on
        row.update(error="unconvertible", error_detail=f"{type(exc).__name__}: {exc}"[:300])
    return row


def _run(jobs: list[tuple], workers: int, progress: bool) -> Iterable[dict[str, Any]]:
    bar = dict(total=len(jobs), desc="scan", unit="file", disable=not progress, mininterval=1.0)
    if workers <= 1 or len(jobs) < POOL_MIN_FILES:
        return [scan_file(j) for j in tqdm(jobs, **bar)]
    # spawn, not fork: the parent holds ClearML threads, and forking a threaded process can hang.
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        chunk = max(16, len(jobs) // (workers * 8))
        return list(tqdm(pool.map(scan_file, jobs, chunksize=chunk), **bar))


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def scan_source(
    source: str | Path,
    extract_dir: str | Path | None = None,
    classes: Sequence[str] = CLASSES,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
    progress: bool = True,
) -> ScanResult:
    """Scan a folder, or a .zip after safe extraction into ``extract_dir``."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"source {source} does not exist")
    if source.is_file():
        if source.suffix.lower() != ".zip":
            raise ValueError(f"source {source} is neither a folder nor a .zip")
        if extract_dir is None:
            raise ValueError("a .zip source needs extract_dir")
        root = safe_extract_zip(source, extract_dir)
    else:
        root = source.resolve()
    files = list_files(root)
    data_root = find_data_root(files, classes)
    jobs = [
        (str(root), rel, class_of(rel, data_root), is_litter(rel), max_pixels) for rel in files
    ]
    rows = list(_run(jobs, default_workers() if workers is None else workers, progress))
    table = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("width", "height", "bytes", "exif_orientation"):
        table[col] = table[col].astype("Int64")
    table["litter"] = table["litter"].astype(bool)
    return ScanResult(table=table, root=root, data_root=data_root)

"""Scan every file of a folder or .zip into one table (one row per file, nothing skipped).

The table is what Great Expectations validates and what the quarantine rules read; litter is
recorded, not dropped, so the raw version can keep every file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from asl_recognition.classes import CLASSES
from asl_recognition.data.per_file import COLUMNS, POOL_MIN_FILES, scan_file
from asl_recognition.data.safe_extract import safe_extract_zip
from asl_recognition.imageio import MAX_PIXELS
from asl_recognition.workers import run_pool

LITTER_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX"}


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
    """Every non-folder entry under ``root`` (relative POSIX, sorted): links are listed, never
    followed; FIFOs, sockets and devices are listed too, so the scan reports them."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            out.append((Path(dirpath) / name).relative_to(root).as_posix())
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


# Pseudo-file systems: their files change while read, and some are endless (/proc/self/pagemap).
KERNEL_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _refuse_kernel_folder(source: Path, root: Path) -> None:
    for folder in KERNEL_FOLDERS:
        if root == folder or folder in root.parents:
            raise ValueError(f"source {source} is inside {folder}, a kernel folder, not images")


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
        _refuse_kernel_folder(source, root)
    files = list_files(root)
    data_root = find_data_root(files, classes)
    jobs = [
        (str(root), rel, class_of(rel, data_root), is_litter(rel), max_pixels) for rel in files
    ]
    rows = run_pool(scan_file, jobs, workers, "scan", progress, min_jobs=POOL_MIN_FILES)
    table = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("width", "height", "bytes", "exif_orientation"):
        table[col] = table[col].astype("Int64")
    table["litter"] = table["litter"].astype(bool)
    return ScanResult(table=table, root=root, data_root=data_root)

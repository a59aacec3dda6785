"""Per-file work (scan one file, resize one image), run over many by ``workers.run_pool``.

Kept free of pandas/GX imports so spawned pool processes start fast.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from asl_recognition.hashing import sha256_file
from asl_recognition.imageio import (
    ImageDecodeError,
    declared_size,
    decode_rgb,
    load_rgb,
    read_header,
)

# Below this many files a spawn pool costs more to start (imports in each worker) than it saves.
POOL_MIN_FILES = 1500
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


def _special_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "special file"


def _orientation(header: Any) -> int:
    try:
        return int(header.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
        return 1


def printable_name(name: str) -> str:
    """``name`` as UTF-8 text: bytes a file system name holds that are not UTF-8 (Python's
    surrogate escapes, a Latin-1 ``\\xe9``) written as ``\\xNN``; other names unchanged."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def scan_file(args: tuple[str, str, str | None, bool, int]) -> dict[str, Any]:
    """One row: header facts without decoding, then a bounded full decode for errors and phash."""
    import imagehash

    root, relpath, cls, litter, max_pixels = args
    path = Path(root) / relpath
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(path=relpath, litter=litter)
    row["class"] = cls
    shown = printable_name(relpath)
    if shown != relpath:  # GX, JSON and CSV take text: one such name failed the whole run
        detail = f"{shown}: its name is not UTF-8 text (rename the file)"
        row.update(path=shown, error="name_not_utf8", error_detail=detail[:300])
        row["class"] = cls if cls is None else printable_name(cls)
        return row
    try:
        info = path.lstat()
    except OSError as exc:  # vanished since it was listed (/proc, a folder being written)
        row.update(error="unreadable", error_detail=f"{relpath}: {exc.strerror or exc}"[:300])
        return row
    if stat.S_ISLNK(info.st_mode):  # never read through a link: it may point anywhere
        row.update(error="symlink", error_detail=f"{relpath} is a symbolic link")
        return row
    if not stat.S_ISREG(info.st_mode):  # opening a FIFO would block the scan forever
        kind = _special_kind(info.st_mode)
        row.update(error="not_a_regular_file", error_detail=f"{relpath} is a {kind}")
        return row
    try:
        row.update(bytes=path.stat().st_size, sha256=sha256_file(path))
    except OSError as exc:  # e.g. /proc or a file that vanished: recorded, the scan goes on
        row.update(error="unreadable", error_detail=f"{relpath}: {exc.strerror or exc}"[:300])
        return row
    if litter:
        return row  # recorded and kept in the raw version, never decoded
    try:
        with read_header(path, max_pixels) as header:
            row.update(
                width=header.size[0],
                height=header.size[1],
                mode=header.mode,
                format=header.format,
                exif_orientation=_orientation(header),
            )
            image = decode_rgb(header, max_pixels)
        row["phash"] = str(imagehash.phash(image))
    except ImageDecodeError as exc:
        row.update(error=exc.reason, error_detail=exc.detail[:300])
        if exc.reason == "decompression_bomb":
            row["width"], row["height"] = declared_size(path) or (None, None)
    except Exception as exc:  # noqa: BLE001 - e.g. a mode Pillow cannot convert: record, go on
        row.update(error="unconvertible", error_detail=f"{type(exc).__name__}: {exc}"[:300])
    return row


JPEG_QUALITY = 95


def preprocess_one(job: tuple[str, str, int]) -> None:
    """Decode (bounded, EXIF-upright, RGB), resize to size x size, save JPEG (the phash of
    every image comes from the raw version's scan)."""
    from PIL import Image

    source, target, size = job
    image = load_rgb(source)
    image = image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="JPEG", quality=JPEG_QUALITY)

"""Per-file work run in pool processes: kept free of pandas/GX imports so workers start fast."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from asl_recognition.imageio import ImageDecodeError, load_rgb, read_header
from asl_recognition.store.base import sha256_file

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
    row.update(bytes=path.stat().st_size, sha256=sha256_file(path))
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

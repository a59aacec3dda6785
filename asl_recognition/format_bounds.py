"""Bounds a format's header sets beyond its picture's size: what its decoder allocates or reads.

A picture's width and height bound its pixels, but a tiled TIFF is decoded a whole tile at a time
and a run-length BMP is decoded byte by byte in Python: each needs its own check from the header.
"""

from __future__ import annotations

from PIL import Image

# TileWidth, TileLength: libtiff decodes a whole tile at a time, whatever the picture's size (a
# 64x64 TIFF in one 46320 x 46320 tile took 2 GB from 2 MB): a tile counts against MAX_PIXELS.
TIFF_TILE_TAGS = (322, 323)
# Run-length BMP (RLE8, RLE4), decoded in Python: a no-op (a move by 0, 0) adds no pixel (25 MB
# of them held the hand step 6 s); any encoding needs at most 2 bytes a pixel and a line end.
BMP_RLE_COMPRESSIONS = (1, 2)


def tiff_tile(img: Image.Image) -> tuple[int, int]:
    """(width, length) of a tiled TIFF's tiles, (0, 0) for any other image."""
    tags = getattr(img, "tag_v2", None) if img.format == "TIFF" else None
    values = [tags.get(tag, 0) if tags else 0 for tag in TIFF_TILE_TAGS]
    try:  # several values: libtiff reads the first; a malformed tag it refuses itself
        width, length = (int(v[0] if isinstance(v, tuple) and v else v) for v in values)
    except (TypeError, ValueError):
        return 0, 0
    return width, length


def rle_problem(img: Image.Image, nbytes: int) -> str | None:
    """Why a run-length BMP of ``nbytes`` is refused: more bytes than its pixels can need."""
    if img.format != "BMP" or img.info.get("compression") not in BMP_RLE_COMPRESSIONS:
        return None
    (w, h), offset = img.size, img.tile[0][2] if img.tile else 0
    need = offset + 2 * (w * h + h) + 2
    if nbytes <= need:
        return None
    return f"a {w}x{h} run-length BMP of {nbytes} bytes, more than its pixels need ({need})"


__all__ = ["BMP_RLE_COMPRESSIONS", "TIFF_TILE_TAGS", "rle_problem", "tiff_tile"]

"""Bounded, EXIF-aware image decoding shared by validation, preprocessing, training and clients.

Every stage decodes through here so that a decompression bomb or a truncated file is refused the
same way everywhere, and an EXIF-rotated phone photo is upright everywhere.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# 40 MP: far above any camera frame this project sees, far below a bomb's 10^9+ pixels.
MAX_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """A file that cannot be used as an image; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def read_header(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open lazily (header only) and refuse oversize images before any pixel is decoded."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise ImageDecodeError("empty_file", f"{path} has zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError("decompression_bomb", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not_an_image", f"{path} is not a readable image") from exc
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageDecodeError(
            "decompression_bomb", f"{path} is {w}x{h} = {w * h} pixels, over {max_pixels}"
        )
    return img


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode fully, apply EXIF orientation, convert to RGB (RGBA, L, CMYK, P all allowed)."""
    img = read_header(path, max_pixels)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError("truncated_or_corrupt", f"{path}: {exc}") from exc
    img = ImageOps.exif_transpose(img)
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Composite on black like the backgrounds in the external set, not an arbitrary colour.
            rgba = img.convert("RGBA")
            background = Image.new("RGB", rgba.size, (0, 0, 0))
            background.paste(rgba, mask=rgba.getchannel("A"))
            img = background
        else:
            img = img.convert("RGB")
    return img

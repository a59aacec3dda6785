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
# Each architecture's total stride: below it the last feature map is less than one cell (the
# cnn then fails outright; torchvision backbones run on a 1x1 map made mostly of padding).
MIN_IMAGE_SIZE = {"cnn": 16, "resnet18": 32, "mobilenet_v3_small": 32}
# The project's largest model input: 1024 px RGB is 3 MB per decoded image, far above what the
# models train at; a published dataset at a size no model takes would be useless.
MAX_IMAGE_SIZE = 1024


class ImageDecodeError(ValueError):
    """A file that cannot be used as an image; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ImageSizeError(ValueError):
    """An image side no model of the project can take."""


def check_image_size(
    image_size: int, model: str | None = None, error: type[ValueError] = ImageSizeError
) -> int:
    """The side as an int, or ``error`` saying why no model (or ``model``) can use it.

    One bound for publishing (``model`` None: the smallest side any architecture takes) and for
    training (the architecture's own), so a dataset is never published at a size nothing trains.
    """
    try:
        size = int(image_size)
        if size != float(image_size):
            raise ValueError
    except (TypeError, ValueError):
        raise error(f"image size {image_size!r} is not a whole number of pixels") from None
    if model is not None and model not in MIN_IMAGE_SIZE:
        raise error(f"unknown model {model!r}; choose one of {', '.join(MIN_IMAGE_SIZE)}")
    name = model or min(MIN_IMAGE_SIZE, key=MIN_IMAGE_SIZE.__getitem__)
    low = MIN_IMAGE_SIZE[name]
    target = model or "every model"
    if size < low:
        need = f"it needs at least {low} px" if model else f"the smallest ({name}) needs {low} px"
        raise error(
            f"image size {size} is too small for {target}: {need} "
            f"(its {low}x downsampling leaves less than one feature cell)"
        )
    if size > MAX_IMAGE_SIZE:
        raise error(
            f"image size {size} is too large for {target}: the project's bound is "
            f"{MAX_IMAGE_SIZE} px"
        )
    return size


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

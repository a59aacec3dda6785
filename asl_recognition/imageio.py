"""Bounded, EXIF-aware image decoding shared by validation, preprocessing, training and clients.

Every stage decodes through here so that a decompression bomb or a truncated file is refused the
same way everywhere, and an EXIF-rotated phone photo is upright everywhere.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 40 MP: the most a decoded image may hold; bigger photos are decoded reduced to fit.
MAX_PIXELS = 40_000_000
# A header declaring more than 4 x MAX_PIXELS (160 MP, above the largest camera sensors), or more
# than MAX_PIXELS at over 1000 pixels per file byte (photos need far more than a byte per 1000
# pixels; a bomb's blank rows need almost none), is a decompression bomb: refused undecoded.
BOMB_FACTOR = 4
BOMB_PIXELS_PER_BYTE = 1000
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


def _bomb_problem(w: int, h: int, nbytes: int, max_pixels: int) -> str | None:
    """Why a declared size is a decompression bomb rather than a big photo (None: it is not)."""
    pixels = w * h
    if pixels > BOMB_FACTOR * max_pixels:
        return f"{w}x{h} = {pixels} pixels, over {BOMB_FACTOR * max_pixels}"
    if pixels > max_pixels and pixels > BOMB_PIXELS_PER_BYTE * nbytes:
        return (
            f"{w}x{h} = {pixels} pixels from {nbytes} bytes: over {max_pixels} pixels and "
            f"over {BOMB_PIXELS_PER_BYTE} pixels per byte, no photograph compresses so well"
        )
    return None


def declared_size(path: str | Path) -> tuple[int, int] | None:
    """The size a header declares, even past Pillow's own bomb limit (no pixel is decoded)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return img.size
    except Exception:  # noqa: BLE001 - the size is a courtesy for the report
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_header(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open lazily (header only) and refuse decompression bombs before any pixel is decoded.

    A photo over ``max_pixels`` passes here: :func:`decode_rgb` reads it reduced.
    """
    path = Path(path)
    nbytes = path.stat().st_size
    if nbytes == 0:
        raise ImageDecodeError("empty_file", f"{path} has zero bytes")
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 MP; the bound that matters is checked just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("decompression_bomb", f"{path}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not_an_image", f"{path} is not a readable image") from exc
    problem = _bomb_problem(*img.size, nbytes, max_pixels)
    if problem:
        img.close()
        raise ImageDecodeError("decompression_bomb", f"{path} is {problem}")
    return img


def _reduce_factor(size: tuple[int, int], max_pixels: int) -> int:
    w, h = size
    factor = max(1, math.isqrt(max(0, w * h - 1) // max_pixels))
    while math.ceil(w / factor) * math.ceil(h / factor) > max_pixels:
        factor += 1
    return factor


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey scaled to 0..255 (Pillow's convert would clip them to white)."""
    out = _scaled_grey(img)
    if out is not img:
        out.info = dict(img.info)  # the EXIF orientation goes along
    return out


def _scaled_grey(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I;16"):
        wide = np.asarray(img).astype(np.uint32)
        return Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L")
    if img.mode == "I":
        wide = np.asarray(img).astype(np.int64)
        if wide.max(initial=0) > 255:  # 16-bit data in a 32-bit mode
            wide = (wide + 128) // 257
        return Image.fromarray(np.clip(wide, 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if values.max(initial=0.0) <= 1.0:  # floats in 0..1
            values = values * 255.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    return img


def _composite_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ):
        # Composite on black like the backgrounds in the external set, not an arbitrary colour.
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode_rgb(img: Image.Image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an opened header: at most ``max_pixels`` (reduced, JPEG via ``draft``), 16-bit
    scaled to 8, EXIF-upright, alpha composited on black, RGB."""
    name = getattr(img, "filename", "") or "image"
    factor = _reduce_factor(img.size, max_pixels)
    try:
        if factor > 1 and img.format == "JPEG":
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale: the full image never exists in memory
            img.draft(img.mode, (math.ceil(img.size[0] / factor), math.ceil(img.size[1] / factor)))
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError("truncated_or_corrupt", f"{name}: {exc}") from exc
    img = _to_8bit(img)
    factor = _reduce_factor(img.size, max_pixels)
    if factor > 1:
        if img.mode in ("1", "P"):  # modes Image.reduce cannot average
            img = img.convert("L" if img.mode == "1" else "RGBA")
        img = img.reduce(factor)  # keeps info, so the EXIF orientation survives
    return _composite_rgb(ImageOps.exif_transpose(img))


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and decode bounded, upright RGB (any mode: RGBA, L, I;16, CMYK, P ...)."""
    with read_header(path, max_pixels) as header:
        return decode_rgb(header, max_pixels)  # a new image: closing the header keeps it

"""Bounded, EXIF-aware image decoding shared by validation, preprocessing, training and clients.

Every stage decodes through here so that a decompression bomb or a truncated file is refused the
same way everywhere, and an EXIF-rotated phone photo is upright everywhere.
"""

from __future__ import annotations

import io
import math
import re
import stat
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .format_bounds import rle_problem, tiff_tile

# The most bytes a JPEG or WebP file may have to be opened: Pillow's WebP reader holds the whole
# file in memory while opening, before any bound is checked, and a JPEG's markers are walked in
# memory. The serving bound (hands_repository.MAX_IMAGE_BYTES); no such photo needs more. Other
# formats are streamed (an uncompressed 16-bit TIFF within MAX_PIXELS may be far larger).
MAX_FILE_BYTES = 25 * 1024 * 1024
# 40 MP: the most pixels one decode may allocate. A header is refused before any pixel is decoded
# when a side is over MAX_SIDE, or when its pixels are over MAX_PIXELS (formats decoded whole) or
# over JPEG_REDUCTION**2 x MAX_PIXELS (JPEG, which libjpeg reads at 1/2 scale through ``draft``).
# A bound on the decoded size, not on a pixels-per-byte ratio: padding a bomb with junk bytes
# moves a ratio, never the pixels it decodes to.
MAX_PIXELS = 40_000_000
MAX_SIDE = 20_000
JPEG_REDUCTION = 2
JPEG_FORMATS = ("JPEG", "MPO")
# A JPEG of several scans (every progressive one) decodes through libjpeg's whole-image buffer of
# coefficients, 2 bytes per sample at full size whatever the draft scale, and each scan walks all
# of it: its samples count against MAX_PIXELS (never read reduced), and its scans are counted
# before decoding. A photo has about 10 scans and a few dozen markers; a bomb of empty scans has
# thousands (10 s of CPU per 1000 at 12600 x 12600, in 10 KB).
MAX_JPEG_SCANS = 100
MAX_JPEG_MARKERS = 10_000
JPEG_MAGIC = b"\xff\xd8\xff"
# The next marker: 0xFF not followed by a stuffed 0x00, a fill 0xFF or a restart marker (RSTn).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# The only formats Pillow may open: plugins whose ``open`` reads a header and no pixel. Icon and
# container formats (ICO, CUR, ICNS, ...) decode an embedded image inside ``Image.open``, whose
# real size their header does not tell, so no bound could be checked before the decode.
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "TIFF", "WEBP")
# A phone's HEIC photo (ISO base media: an ``ftyp`` box, then its major brand): no Pillow plugin
# reads it, so it is named for what it is rather than "not an image".
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs")
HEIF_NAME = "HEIF (HEIC, a phone camera's default: export the photo as JPEG)"
# Pillow's own guard (it refuses over twice this) at the project's largest bound, the JPEG one:
# it refuses inside ``Image.open`` what a plugin would allocate there (a WebP canvas), before
# our own check runs. Set once at import and only ever lowered, so no thread sees it change
# back and forth; :func:`declared_size` lifts it only under :data:`_PILLOW_LIMIT_LOCK`.
PILLOW_MAX_IMAGE_PIXELS = JPEG_REDUCTION**2 * MAX_PIXELS // 2
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > PILLOW_MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = PILLOW_MAX_IMAGE_PIXELS
_PILLOW_LIMIT_LOCK = threading.Lock()
# The most pixels the images of one served request may decode to, all together (two images of
# MAX_PIXELS, or eight 10 MP photos): one request holds the hand step for at most a few seconds.
MAX_REQUEST_PIXELS = 2 * MAX_PIXELS
# What Pillow raises while loading a file its header parser took: all the file's fault. Not
# only OSError: a TIFF whose strip offsets are typed DOUBLE seeks to a float (TypeError), and
# ``Image.open`` itself treats IndexError and struct.error as "not this format".
LOAD_ERRORS = (
    OSError, SyntaxError, ValueError, TypeError, IndexError, struct.error,
    Image.DecompressionBombError,
)  # fmt: skip
# Rows converted per step by the 16/32-bit grey scaling, so its wide temporaries stay small.
_BLOCK_VALUES = 1 << 20


class ImageDecodeError(ValueError):
    """A file that cannot be used as an image; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _is_jpeg(img: Image.Image) -> bool:
    return img.format in JPEG_FORMATS


def _jpeg_scale(size: tuple[int, int], max_pixels: int) -> int:
    """The smallest libjpeg scale (1, 2, 4, 8) that decodes to at most ``max_pixels``."""
    w, h = size
    for scale in (1, 2, 4, 8):
        if math.ceil(w / scale) * math.ceil(h / scale) <= max_pixels:
            return scale
    return 8


def jpeg_markers_problem(data: bytes) -> tuple[int, str | None]:
    """(scans, why refused or None) of the JPEG ``data``'s first image, in one linear pass that
    stops at a bound: segment lengths are walked, entropy-coded data is skipped by one search.

    Pillow reads markers only up to the first scan; libjpeg reads them all while decoding."""
    pos, scans, markers = 2, 0, 0
    while found := _NEXT_MARKER.search(data, pos):
        marker, pos, markers = data[found.start() + 1], found.end(), markers + 1
        if marker == 0xD9:  # EOI
            break
        if markers > MAX_JPEG_MARKERS:
            return scans, f"a JPEG of over {MAX_JPEG_MARKERS} markers (a photo has a few dozen)"
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length follows
            continue
        pos += max(2, int.from_bytes(data[pos : pos + 2], "big"))  # the segment's length
        if marker == 0xDA:  # SOS; its entropy-coded data follows, up to the next marker
            scans += 1
            if scans > MAX_JPEG_SCANS:
                return scans, f"a JPEG of over {MAX_JPEG_SCANS} scans (a photo has about 10)"
    return scans, None


def _jpeg_samples(img: Image.Image) -> int:
    """Samples of libjpeg's whole-image coefficient buffer: every component at full size, less
    its chroma subsampling, whatever the draft scale. 0 for a JPEG of one scan (streamed)."""
    if not (img.info.get("progressive") or img.info.get("jpeg_scans", 1) > 1):
        return 0
    (w, h), layers = img.size, getattr(img, "layer", [])  # (id, horizontal, vertical, table)
    most_h, most_v = (max([c[i] for c in layers] + [1]) for i in (1, 2))
    return sum(math.ceil(w * c[1] / most_h) * math.ceil(h * c[2] / most_v) for c in layers)


def decoded_size(img: Image.Image, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """The size :func:`decode_rgb` gives an opened header (a JPEG read reduced past
    ``max_pixels``): the picture's pixels, whatever its decoder holds meanwhile."""
    scale = _jpeg_scale(img.size, max_pixels) if _is_jpeg(img) else 1
    return math.ceil(img.size[0] / scale), math.ceil(img.size[1] / scale)


def decode_pixels(img: Image.Image, max_pixels: int = MAX_PIXELS) -> int:
    """The pixels :func:`decode_rgb` will allocate for an opened header (JPEG: read reduced, or
    the samples of its full-size buffer when it has several scans)."""
    (w, h), (tile_w, tile_h) = decoded_size(img, max_pixels), tiff_tile(img)
    return max(w * h, _jpeg_samples(img)) if _is_jpeg(img) else max(w * h, tile_w * tile_h)


def _header_problem(img: Image.Image, max_pixels: int) -> str | None:
    """Why a declared size may not be decoded (None: it may), from the header alone."""
    w, h = img.size
    if max(w, h) > MAX_SIDE:
        return f"{w}x{h} pixels: a side over the bound of {MAX_SIDE}"
    tile_w, tile_h = tiff_tile(img)
    if tile_w * tile_h > max_pixels:
        return (
            f"{w}x{h} in tiles of {tile_w}x{tile_h} = {tile_w * tile_h} pixels, over the bound "
            f"of {max_pixels} (a TIFF is decoded a whole tile at a time)"
        )
    samples = _jpeg_samples(img) if _is_jpeg(img) else 0
    if samples > max_pixels:
        return (
            f"{w}x{h}, {samples} samples in its {len(img.layer)} component(s), over the bound "
            f"of {max_pixels} (a JPEG of several scans is held whole at full size, not reduced)"
        )
    if _is_jpeg(img):
        limit, how = JPEG_REDUCTION**2 * max_pixels, f"a JPEG is read at 1/{JPEG_REDUCTION} scale"
    else:
        limit, how = max_pixels, f"a {img.format or 'non-JPEG'} image is decoded whole"
    if w * h > limit:
        return f"{w}x{h} = {w * h} pixels, over the bound of {limit} ({how})"
    return None


def _open_formats() -> tuple[str, ...]:
    """:data:`ACCEPTED_FORMATS` this Pillow has (``Image.open`` fails on a missing one)."""
    Image.init()
    return tuple(f for f in ACCEPTED_FORMATS if f in Image.OPEN)


def _refused_format(prefix: bytes) -> str | None:
    """The name of a format Pillow knows but the project does not open, from magic bytes only."""
    if prefix[4:8] == b"ftyp" and prefix[8:12] in HEIF_BRANDS:
        return HEIF_NAME
    for name in Image.ID:
        factory_accept = Image.OPEN.get(name)
        if name in ACCEPTED_FORMATS or not factory_accept or factory_accept[1] is None:
            continue
        try:
            found = factory_accept[1](prefix)
        except Exception:  # noqa: BLE001 - a plugin's magic check is only a hint here
            continue
        if found and not isinstance(found, str):
            return name
    return None


def _open_header(stream, name: str) -> Image.Image:
    """``Image.open`` limited to :data:`ACCEPTED_FORMATS`, every parse failure an
    :class:`ImageDecodeError`; file-system errors (an errno: missing, denied) propagate."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from half its limit; the bound that matters is checked after this
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _PILLOW_LIMIT_LOCK:  # never while declared_size has lifted Pillow's guard
                return Image.open(stream, formats=_open_formats())
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("decompression_bomb", f"{name}: {exc}") from exc
    except UnidentifiedImageError as exc:
        other = _refused_format(_prefix(stream))
        if other:
            accepted = ", ".join(sorted(set(ACCEPTED_FORMATS) - {"MPO"}))
            raise ImageDecodeError(
                "unsupported_format",
                f"{name} is in {other} format, refused unopened (the formats read: {accepted})",
            ) from exc
        raise ImageDecodeError("not_an_image", f"{name} is not a readable image") from exc
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise ImageDecodeError(
            "truncated_or_corrupt", f"{name} is truncated or corrupt: {exc}"
        ) from exc
    except (SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(
            "truncated_or_corrupt", f"{name} is truncated or corrupt: {exc}"
        ) from exc


def _prefix(stream) -> bytes:
    """The first 16 bytes, where Pillow's plugins look for their magic."""
    if isinstance(stream, io.BytesIO):
        return stream.getvalue()[:16]
    try:
        with open(stream, "rb") as fh:
            return fh.read(16)
    except OSError:
        return b""


def declared_size(path: str | Path) -> tuple[int, int] | None:
    """The size a header declares, even past Pillow's own bomb limit (no pixel is decoded).

    Not for WebP: its plugin sets up libwebp's decoder, canvas and all, while opening, so with
    the guard lifted a bomb's size is not worth reading (None)."""
    formats = tuple(name for name in _open_formats() if name != "WEBP")
    try:
        with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path, formats=formats) as img:
                    return img.size
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except Exception:  # noqa: BLE001 - the size is a courtesy for the report
        return None


def read_header(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open lazily (header only) and refuse what decodes too big before any pixel is decoded.

    ``source`` is a file or the file's bytes (the hand step's request). Refused, with reason
    ``decompression_bomb``: a side over :data:`MAX_SIDE`, or over :data:`MAX_PIXELS` pixels
    (JPEG: over ``JPEG_REDUCTION**2`` times that, read reduced by :func:`decode_rgb`; a JPEG of
    several scans: its full-size samples, counted in ``info["jpeg_scans"]``, over MAX_PIXELS),
    or a JPEG of over :data:`MAX_JPEG_SCANS` scans (its markers are walked before opening);
    ``file_too_large``: a JPEG or WebP file over :data:`MAX_FILE_BYTES`, unread (bytes: the
    caller bounds them); ``unsupported_format``: not one of :data:`ACCEPTED_FORMATS` (an icon
    decodes while opened); ``truncated_or_corrupt``: a header Pillow cannot parse. File-system
    errors stay ``OSError``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, nbytes, stream, data = "the image", len(source), io.BytesIO(source), source
    else:
        name, info, stream = str(source), Path(source).stat(), source
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):  # a folder: OSError
            # a named pipe: reading it waits for a writer for ever
            raise ImageDecodeError("not_an_image", f"{name} is not a regular file; not read")
        nbytes, prefix = info.st_size, _prefix(source)
        is_jpeg = prefix.startswith(JPEG_MAGIC)
        if nbytes > MAX_FILE_BYTES and (is_jpeg or prefix[8:12] == b"WEBP"):
            raise ImageDecodeError(
                "file_too_large",
                f"{name} is {nbytes} bytes, over the limit of {MAX_FILE_BYTES} for a JPEG or "
                "WebP file (read whole to open)",
            )
        data = Path(source).read_bytes() if is_jpeg else b""
    if nbytes == 0:
        raise ImageDecodeError("empty_file", f"{name} has zero bytes")
    scans, problem = jpeg_markers_problem(data) if data[:3] == JPEG_MAGIC else (0, None)
    if problem:
        raise ImageDecodeError("decompression_bomb", f"{name} is {problem}; refused undecoded")
    img = _open_header(stream, name)
    if _is_jpeg(img):
        img.info["jpeg_scans"] = scans
    problem = _header_problem(img, max_pixels) or rle_problem(img, nbytes)
    if problem:
        img.close()
        raise ImageDecodeError("decompression_bomb", f"{name} is {problem}; refused undecoded")
    return img


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey scaled to 0..255 (Pillow's convert would clip them to white)."""
    out = _scaled_grey(img)
    if out is not img:
        out.info = dict(img.info)  # the EXIF orientation goes along
    return out


def _row_blocks(values: np.ndarray):
    step = max(1, _BLOCK_VALUES // max(1, values.shape[1]))
    return (slice(top, top + step) for top in range(0, values.shape[0], step))


def _scaled_grey(img: Image.Image) -> Image.Image:
    """Wide grey to 8 bits, a block of rows at a time (the same values as whole-array maths)."""
    if not (img.mode.startswith("I;16") or img.mode in ("I", "F")):
        return img
    values = np.asarray(img)
    out = np.empty(values.shape, np.uint8)
    if img.mode.startswith("I;16"):
        for rows in _row_blocks(values):
            out[rows] = (values[rows].astype(np.uint32) + 128) // 257
    elif img.mode == "I":
        wide = values.max(initial=0) > 255  # 16-bit data in a 32-bit mode
        for rows in _row_blocks(values):
            block = values[rows].astype(np.int64)
            out[rows] = np.clip((block + 128) // 257 if wide else block, 0, 255)
    else:
        unit = values.max(initial=0.0) <= 1.0  # floats in 0..1
        for rows in _row_blocks(values):
            block = values[rows].astype(np.float64) * (255.0 if unit else 1.0)
            out[rows] = np.clip(np.rint(block), 0, 255)
    return Image.fromarray(out, "L")


def _composite_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ):
        # Composite on black like the backgrounds in the external set, not an arbitrary colour.
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode_rgb(img: Image.Image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an opened header: at most ``max_pixels`` (JPEG read reduced via ``draft``), 16-bit
    scaled to 8, EXIF-upright, alpha composited on black, RGB.

    Nothing over ``max_pixels`` is ever decoded: a header that would be (a JPEG ``draft`` cannot
    reduce, a header :func:`read_header` did not check) is refused first.
    """
    name = getattr(img, "filename", "") or "the image"
    # Never Pillow's memory map (paths only): it scrambled an uncompressed TIFF turned 90 degrees
    # (EXIF 5-8) that the hand step, given the same bytes, decoded upright.
    img.filename = ""
    samples = _jpeg_samples(img) if _is_jpeg(img) else 0
    if samples > max_pixels:
        raise ImageDecodeError(
            "decompression_bomb", f"{name} would hold {samples} samples whole, over {max_pixels}"
        )
    if _is_jpeg(img) and img.size[0] * img.size[1] > max_pixels:
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale: the full image never exists in memory.
        # draft picks the largest scale s with size // request >= s, so ask for size // s.
        scale = _jpeg_scale(img.size, max_pixels)
        img.draft(img.mode, (max(1, img.size[0] // scale), max(1, img.size[1] // scale)))
    if img.size[0] * img.size[1] > max_pixels:
        w, h = img.size
        raise ImageDecodeError(
            "decompression_bomb", f"{name} would decode to {w}x{h} pixels, over {max_pixels}"
        )
    try:
        img.load()
    except LOAD_ERRORS as exc:
        raise ImageDecodeError("truncated_or_corrupt", f"{name}: {exc}") from exc
    return _composite_rgb(ImageOps.exif_transpose(_to_8bit(img)))


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and decode bounded, upright RGB (any mode: RGBA, L, I;16, CMYK, P ...)."""
    with read_header(path, max_pixels) as header:
        return decode_rgb(header, max_pixels)  # a new image: closing the header keeps it

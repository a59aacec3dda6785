#!/usr/bin/env python3
"""Classify ASL hand-sign images with the Triton-served model.

    python triton/client/client.py --image A.jpg [--image B.jpg ...] [--dir DIR]
        [--url HOST:PORT] [--protocol http|grpc] [--model asl] [--top-k K] [--json]

Standalone on purpose (it runs alone in its Docker image): it needs only numpy, Pillow and
tritonclient. The input size, layout and dtype come from the server's model metadata and
config, so a model trained at another size needs no client change. Images are sent in batches
of up to the model's max_batch_size.

A model whose input is TYPE_STRING (the hand-landmark pipeline) gets each file's bytes as they
are on disk, one file per request (the server decodes, finds the hand and batches requests
itself); files over MAX_FILE_BYTES are refused before sending. When the model answers
HAND_FOUND 0 the line says "no hand found" (JSON: ``"hand_found": false``). A model with a
LANDMARKS output (the hand's 21 points in the photo's pixels) adds them to the JSON
(``"landmarks": [[x, y, z], ...]``); a repository built before that output still works.

Images the client decodes itself (models that take pixels) are decoded exactly as training
decodes them: the decoder below is a copy of ``asl_recognition/imageio.py`` (this file cannot
import the package), with the same bounds (a file over MAX_FILE_BYTES is refused unopened, a
JPEG of over MAX_JPEG_SCANS scans undecoded); a test compares the two on awkward files.

Only a model whose output has class labels in its config is asked: any other (``asl_hands``,
whose FEATURES are hand landmarks) is refused with one line.

If the server stops answering mid-run (over HTTP or gRPC), the answers already received are
printed, then one line says how many images were not classified (exit code 3).
A 429 (the front's rate limit, which queues nothing) is sent again after its Retry-After (at
most RETRY_AFTER_MAX_S), within --timeout: before, a --dir past the front's burst stopped as a
lost server (exit 3) with the server up.

The server is not trusted either: every call gets --timeout seconds in all (gRPC calls had no
deadline, a stalled server held the client for ever; an HTTP server sending slowly held it
too), an answer over MAX_RESPONSE_BYTES is refused as it arrives, as is a compressed one (never
asked for), and an answer of another shape, or not a finite probability per class, is an
inference failure (exit code 5), never printed as classes.

Exit codes: 0 all classified; 1 some files were not images (or the server refused them), or a
--dir could not be listed; 3 server unreachable, or lost mid-run; 4 model unknown, not ready,
or not a classifier; 5 inference failed.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# The server's hand pipeline refuses more (hands_repository.MAX_IMAGE_BYTES); no photo needs it.
# The decoder below refuses a larger file unopened too, as training's does: Pillow's WebP reader
# holds the whole file in memory while opening.
MAX_FILE_BYTES = 25 * 1024 * 1024
HAND_FOUND = "HAND_FOUND"
LANDMARKS = "LANDMARKS"
EXIT_BAD_IMAGE, EXIT_UNREACHABLE, EXIT_NO_MODEL, EXIT_INFER = 1, 3, 4, 5
DEFAULT_TIMEOUT_S = 60.0
# The longest Retry-After of a 429 waited for (the front asks for 1 s or so), within --timeout.
RETRY_AFTER_MAX_S = 5.0
# A batch's answer is top-k label strings (and 64 landmark numbers) per image: kilobytes.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# An answer's status line and headers (Triton's are a few hundred bytes): geventhttpclient reads
# them with no bound, and a server sending one endless header took 5.9 GB in 10 s.
MAX_HEADER_BYTES = 64 * 1024
# The model's input as the server describes it (the project trains at 16 to 1,024 px): a side
# over MAX_INPUT_SIDE is refused before any image is resized to it (metadata saying 100,000 x
# 100,000 had the client allocate 24 GB), and one request's pixels stay within MAX_BATCH_BYTES.
MAX_INPUT_SIDE = 4096
MAX_BATCH_BYTES = 256 * 1024 * 1024
# gRPC's send limit as tritonclient sets it (its channel_args replace all of its defaults).
_GRPC_MAX_SEND = 2**31 - 1

# --- The training decoder, copied from asl_recognition/imageio.py and format_bounds.py (this
# file runs alone, so it cannot import them). tests/serving/test_client_decode.py checks that
# both give equal arrays. ---
MAX_PIXELS = 40_000_000
MAX_SIDE = 20_000
JPEG_REDUCTION = 2
JPEG_FORMATS = ("JPEG", "MPO")
# A JPEG of several scans (every progressive one) is decoded whole at full size, whatever draft
# asks, and each scan walks all of it: its samples count against MAX_PIXELS, and more scans or
# markers than a photo has (about 10 and a few dozen) are refused before decoding.
MAX_JPEG_SCANS = 100
MAX_JPEG_MARKERS = 10_000
JPEG_MAGIC = b"\xff\xd8\xff"
TIFF_TILE_TAGS = (322, 323)  # TileWidth, TileLength: one tile counts against MAX_PIXELS
# The next marker: 0xFF not followed by a stuffed 0x00, a fill 0xFF or a restart marker (RSTn).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Only formats whose Pillow plugin reads a header and no pixel while opening: an icon (ICO,
# CUR, ICNS) decodes its embedded image, of a size its header does not tell, inside open.
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "TIFF", "WEBP")
# A phone's HEIC photo (ISO base media: an ``ftyp`` box, then its major brand): no Pillow plugin
# reads it, so it is named for what it is rather than "not an image".
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs")
HEIF_NAME = "HEIF (HEIC, a phone camera's default: export the photo as JPEG)"
BMP_RLE_COMPRESSIONS = (1, 2)  # RLE8, RLE4: at most 2 bytes a pixel (and a line) need
# Pillow's own guard (refusing over twice this) at the largest bound, the JPEG one; this script
# is single-threaded, and the bound is only ever lowered.
PILLOW_MAX_IMAGE_PIXELS = JPEG_REDUCTION**2 * MAX_PIXELS // 2
_BLOCK_VALUES = 1 << 20
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > PILLOW_MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = PILLOW_MAX_IMAGE_PIXELS


class ClientError(Exception):
    """A failure worth one line on stderr and a non-zero exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _jpeg_scale(size: tuple[int, int], max_pixels: int) -> int:
    w, h = size
    for scale in (1, 2, 4, 8):
        if math.ceil(w / scale) * math.ceil(h / scale) <= max_pixels:
            return scale
    return 8


def jpeg_markers_problem(data: bytes) -> tuple[int, str | None]:
    """(scans, why refused or None) of a JPEG's first image, in one linear pass that stops at a
    bound: segment lengths are walked, entropy-coded data is skipped by one search."""
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
    """Samples of libjpeg's whole-image coefficient buffer (0 for one scan, streamed)."""
    if not (img.info.get("progressive") or img.info.get("jpeg_scans", 1) > 1):
        return 0
    (w, h), layers = img.size, getattr(img, "layer", [])  # (id, horizontal, vertical, table)
    most_h, most_v = (max([c[i] for c in layers] + [1]) for i in (1, 2))
    return sum(math.ceil(w * c[1] / most_h) * math.ceil(h * c[2] / most_v) for c in layers)


def _header_problem(img: Image.Image, max_pixels: int) -> str | None:
    w, h = img.size
    if max(w, h) > MAX_SIDE:
        return f"{w}x{h} pixels: a side over the bound of {MAX_SIDE}"
    tags = getattr(img, "tag_v2", None) if img.format == "TIFF" else None
    try:  # libtiff decodes a whole tile at a time, of the size its tags say
        tile_w, tile_h = (int(tags.get(tag, 0)) for tag in TIFF_TILE_TAGS) if tags else (0, 0)
    except (TypeError, ValueError):
        tile_w = tile_h = 0
    if tile_w * tile_h > max_pixels:
        return (
            f"{w}x{h} in tiles of {tile_w}x{tile_h} = {tile_w * tile_h} pixels, over the bound "
            f"of {max_pixels} (a TIFF is decoded a whole tile at a time)"
        )
    samples = _jpeg_samples(img) if img.format in JPEG_FORMATS else 0
    if samples > max_pixels:
        return (
            f"{w}x{h}, {samples} samples in its {len(img.layer)} component(s), over the bound "
            f"of {max_pixels} (a JPEG of several scans is held whole at full size, not reduced)"
        )
    if img.format in JPEG_FORMATS:
        limit, how = JPEG_REDUCTION**2 * max_pixels, f"a JPEG is read at 1/{JPEG_REDUCTION} scale"
    else:
        limit, how = max_pixels, f"a {img.format or 'non-JPEG'} image is decoded whole"
    if w * h > limit:
        return f"{w}x{h} = {w * h} pixels, over the bound of {limit} ({how})"
    return None


def _refused_format(prefix: bytes) -> str | None:
    """A format Pillow knows but this decoder does not open, named from its magic bytes only."""
    if prefix[4:8] == b"ftyp" and prefix[8:12] in HEIF_BRANDS:
        return HEIF_NAME
    for name in Image.ID:
        factory_accept = Image.OPEN.get(name)
        if name in ACCEPTED_FORMATS or not factory_accept or factory_accept[1] is None:
            continue
        try:
            found = factory_accept[1](prefix)
        except Exception:  # a plugin's magic check is only a hint here
            continue
        if found and not isinstance(found, str):
            return name
    return None


def _rle_problem(img: Image.Image, nbytes: int) -> str | None:
    """A run-length BMP of more bytes than its pixels need (Pillow decodes it in Python)."""
    if img.format != "BMP" or img.info.get("compression") not in BMP_RLE_COMPRESSIONS:
        return None
    (w, h), offset = img.size, img.tile[0][2] if img.tile else 0
    need = offset + 2 * (w * h + h) + 2
    if nbytes <= need:
        return None
    return f"a {w}x{h} run-length BMP of {nbytes} bytes, more than its pixels need ({need})"


def read_header(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open lazily (header only); refuse what would decode too big before decoding a pixel, and
    a JPEG or WebP file over MAX_FILE_BYTES (read whole to open) or a JPEG of too many scans
    before opening it."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError("empty file")
    with path.open("rb") as fh:
        prefix = fh.read(16)
    jpeg = prefix.startswith(JPEG_MAGIC)
    if size > MAX_FILE_BYTES and (jpeg or prefix[8:12] == b"WEBP"):
        raise ValueError(
            f"file too large: {size} bytes, over the limit of {MAX_FILE_BYTES} for a JPEG or "
            "WebP file (read whole to open)"
        )
    scans, problem = jpeg_markers_problem(path.read_bytes()) if jpeg else (0, None)
    if problem:
        raise ValueError(f"decompression bomb: {problem}; refused undecoded")
    Image.init()
    formats = tuple(f for f in ACCEPTED_FORMATS if f in Image.OPEN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path, formats=formats)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        with path.open("rb") as fh:
            other = _refused_format(fh.read(16))
        if other:
            accepted = ", ".join(sorted(set(ACCEPTED_FORMATS) - {"MPO"}))
            raise ValueError(
                f"unsupported format: {other}, refused unopened (the formats read: {accepted})"
            ) from None
        raise ValueError("not a readable image") from None
    except OSError as exc:
        if exc.errno is not None:  # missing, denied: the caller's file-system error
            raise
        raise ValueError(f"truncated or corrupt image ({exc})") from None
    except (SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"truncated or corrupt image ({exc})") from None
    if img.format in JPEG_FORMATS:
        img.info["jpeg_scans"] = scans
    problem = _header_problem(img, max_pixels) or _rle_problem(img, size)
    if problem:
        img.close()
        raise ValueError(f"decompression bomb: {problem}; refused undecoded")
    return img


def _row_blocks(values: np.ndarray):
    step = max(1, _BLOCK_VALUES // max(1, values.shape[1]))
    return (slice(top, top + step) for top in range(0, values.shape[0], step))


def _scaled_grey(img: Image.Image) -> Image.Image:
    """16- and 32-bit grey scaled to 0..255 (Pillow's convert would clip them to white)."""
    if not (img.mode.startswith("I;16") or img.mode in ("I", "F")):
        return img
    values = np.asarray(img)
    out = np.empty(values.shape, np.uint8)
    if img.mode.startswith("I;16"):
        for rows in _row_blocks(values):
            out[rows] = (values[rows].astype(np.uint32) + 128) // 257
    elif img.mode == "I":
        wide = values.max(initial=0) > 255
        for rows in _row_blocks(values):
            block = values[rows].astype(np.int64)
            out[rows] = np.clip((block + 128) // 257 if wide else block, 0, 255)
    else:
        unit = values.max(initial=0.0) <= 1.0
        for rows in _row_blocks(values):
            block = values[rows].astype(np.float64) * (255.0 if unit else 1.0)
            out[rows] = np.clip(np.rint(block), 0, 255)
    grey = Image.fromarray(out, "L")
    grey.info = dict(img.info)  # the EXIF orientation goes along
    return grey


def _composite_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))  # on black, as training does
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode_rgb(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Bounded decode exactly as training does: JPEG read reduced past ``max_pixels``, wide grey
    scaled to 8 bits, EXIF-upright, alpha composited on black, RGB."""
    with read_header(path, max_pixels) as img:
        img.filename = ""  # never Pillow's memory map: it scrambled a TIFF turned 90 degrees
        if img.format in JPEG_FORMATS and img.size[0] * img.size[1] > max_pixels:
            scale = _jpeg_scale(img.size, max_pixels)
            img.draft(img.mode, (max(1, img.size[0] // scale), max(1, img.size[1] // scale)))
        if img.size[0] * img.size[1] > max_pixels:
            raise ValueError(f"would decode to {img.size[0]}x{img.size[1]} pixels")
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(f"truncated or corrupt image ({exc})") from None
        return _composite_rgb(ImageOps.exif_transpose(_scaled_grey(img)))


# --- end of the copy ---


class ServerLost(ClientError):
    """The server stopped answering mid-run; what it answered before is kept for printing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, EXIT_UNREACHABLE)
        self.results: list = []
        self.unanswered = 0


def _server_live(client) -> bool:
    try:
        return bool(client.is_server_live())
    except Exception:  # a dead server fails differently per protocol and transport
        return False


@dataclass
class InputSpec:
    """What the served model expects, read from the server."""

    input_name: str
    output_name: str
    datatype: str
    height: int
    width: int
    channels_first: bool
    max_batch_size: int
    hand_output: str | None = None
    landmarks_output: str | None = None

    @property
    def encoded(self) -> bool:
        """The model takes the encoded file (TYPE_STRING), not decoded pixels."""
        return self.datatype == "BYTES"


def to_array(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """Resize to the model's input size and lay out as the model wants (no batch dim)."""
    resized = img.resize((spec.width, spec.height), Image.BILINEAR)
    arr = np.asarray(resized, dtype=np.uint8)
    if spec.channels_first:
        arr = arr.transpose(2, 0, 1)
    if spec.datatype == "UINT8":
        return np.ascontiguousarray(arr)
    if spec.datatype == "FP32":
        return np.ascontiguousarray(arr, dtype=np.float32) / 255.0
    raise ClientError(f"model input dtype {spec.datatype} is not supported", EXIT_NO_MODEL)


def _field(obj, name):
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def _labelled_output(metadata, config, model: str, max_batch: int) -> str:
    """The first output whose config names a labels file: the class probabilities.

    Any other output (the hand step's FEATURES, say) would print as if it were classes.
    """
    labelled = {
        _field(o, "name")
        for o in (_field(config, "output") or [])
        if (o.get("label_filename") if isinstance(o, dict) else o.label_filename)
    }
    outputs = list(_field(metadata, "outputs"))
    for output in outputs:
        if _field(output, "name") in labelled:
            return _field(output, "name")
    described = ", ".join(
        f"{_field(o, 'name')} {[int(d) for d in _field(o, 'shape')][1 if max_batch > 0 else 0:]}"
        for o in outputs
    )
    raise ClientError(
        f"model '{model}' does not output class probabilities: none of its outputs "
        f"({described}) has class labels in its config; ask the model that classifies "
        "(such as 'asl')",
        EXIT_NO_MODEL,
    )


def read_spec(metadata, config, model: str = "the model") -> InputSpec:
    """Parse HTTP (dict) or gRPC (protobuf) metadata/config into an InputSpec."""
    inputs, outputs = list(_field(metadata, "inputs")), list(_field(metadata, "outputs"))
    if len(inputs) != 1 or not outputs:
        raise ClientError("the model must have exactly one image input", EXIT_NO_MODEL)
    max_batch = int(_field(config, "max_batch_size") or 0)
    output_name = _labelled_output(metadata, config, model, max_batch)
    shape = [int(d) for d in _field(inputs[0], "shape")]
    if max_batch > 0:
        shape = shape[1:]
    if _field(inputs[0], "datatype") == "BYTES":
        names = [_field(o, "name") for o in outputs]
        return InputSpec(
            input_name=_field(inputs[0], "name"),
            output_name=output_name,
            datatype="BYTES",
            height=0,
            width=0,
            channels_first=False,
            max_batch_size=max_batch,
            hand_output=HAND_FOUND if HAND_FOUND in names else None,
            landmarks_output=LANDMARKS if LANDMARKS in names else None,
        )
    if len(shape) != 3 or -1 in shape:
        raise ClientError(
            f"unsupported model input shape {shape} (want C,H,W or H,W,C)", EXIT_NO_MODEL
        )
    channels_first = shape[0] == 3
    if 3 not in (shape[0], shape[2]):
        raise ClientError(f"model input shape {shape} is not an RGB image", EXIT_NO_MODEL)
    height, width = (shape[1], shape[2]) if channels_first else (shape[0], shape[1])
    if not (0 < height <= MAX_INPUT_SIDE and 0 < width <= MAX_INPUT_SIDE):
        raise ClientError(
            f"model input shape {shape} is not an image size this client sends (each side 1 "
            f"to {MAX_INPUT_SIDE} px)",
            EXIT_NO_MODEL,
        )
    return InputSpec(
        input_name=_field(inputs[0], "name"),
        output_name=output_name,
        datatype=_field(inputs[0], "datatype"),
        height=height,
        width=width,
        channels_first=channels_first,
        max_batch_size=max_batch,
    )


class _Answer:
    """An HTTP answer already read whole (within the bounds): what tritonclient reads of one."""

    def __init__(self, response, body: bytes) -> None:
        self.status_code, self._response, self._body = response.status_code, response, body

    def __getitem__(self, key: str):
        return self._response[key]

    def get(self, key: str, default=None):
        return self._response.get(key, default)

    def read(self, length: int | None = None) -> bytes:
        length = len(self._body) if length is None or length < 0 else length
        part, self._body = self._body[:length], self._body[length:]
        return part


class _BoundedHttp:
    """tritonclient's HTTP stub, each answer read whole within ``timeout`` s and ``limit``
    bytes (its own reads have only a per-read timeout and no size bound)."""

    def __init__(self, stub, timeout: float, limit: int) -> None:
        self._stub, self._timeout, self._limit = stub, timeout, limit

    def get(self, *args, **kwargs):
        return self._bounded(self._stub.get, args, kwargs)

    def post(self, *args, **kwargs):
        return self._bounded(self._stub.post, args, kwargs)

    def close(self) -> None:
        self._stub.close()

    def _bounded(self, method, args, kwargs) -> _Answer:
        """One call, sent again after a 429's ``Retry-After`` while ``timeout`` allows: the
        front's rate limit queues nothing, and a --dir past its burst was reported as a lost
        server (exit 3) with the server up."""
        import gevent  # tritonclient.http's sockets are gevent's: a Timeout bounds them all

        deadline = time.monotonic() + self._timeout
        while True:
            answer = self._once(gevent, deadline - time.monotonic(), method, args, kwargs)
            wait = _retry_after(answer)
            if wait is None or time.monotonic() + wait >= deadline:
                return answer
            gevent.sleep(wait)

    def _once(self, gevent, seconds: float, method, args, kwargs) -> _Answer:
        late = TimeoutError(f"no whole answer within {self._timeout:g} s")
        with gevent.Timeout(seconds, late):
            response = method(*args, **kwargs)
            if response.get("Content-Encoding") not in (None, "identity"):
                response.release()
                raise ConnectionError("a compressed answer, which was not asked for")
            body = bytes(response.read(self._limit + 1))
        if len(body) > self._limit:
            response.release()
            raise ConnectionError(f"an answer over {self._limit} bytes")
        return _Answer(response, body)


def _retry_after(answer: _Answer) -> float | None:
    """Seconds a 429 asks to wait (1 when it does not say; 0.1 to RETRY_AFTER_MAX_S), else None."""
    if answer.status_code != 429:
        return None
    try:
        wait = float(answer.get("Retry-After", 1))
    except (TypeError, ValueError):  # an HTTP date or garbage: the front sends seconds
        wait = 1.0
    return min(max(wait, 0.1), RETRY_AFTER_MAX_S) if math.isfinite(wait) else 1.0


def _cap_headers() -> None:
    """Refuse an HTTP answer whose status line and headers pass MAX_HEADER_BYTES as they
    arrive: geventhttpclient keeps every header byte, however many, until the blank line."""
    import geventhttpclient.client as ghc

    base = ghc.HTTPSocketPoolResponse
    if getattr(base, "capped", False):
        return

    class Capped(base):
        capped, head = True, 0

        def feed(self, data):
            if not self.headers_complete:
                self.head += len(data)
                if self.head > MAX_HEADER_BYTES:
                    raise ConnectionError(f"an answer's headers over {MAX_HEADER_BYTES} bytes")
            return super().feed(data)

    ghc.HTTPSocketPoolResponse = Capped


class _Deadline:
    """tritonclient's gRPC client, every call given ``client_timeout`` (its default: none)."""

    def __init__(self, client, timeout: float) -> None:
        self._client, self._timeout = client, timeout

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if name == "close" or not callable(method):
            return method
        return functools.partial(method, client_timeout=self._timeout)


def open_client(tc, url: str, protocol: str, timeout: float = DEFAULT_TIMEOUT_S):
    """A client whose calls are bounded in time and answer size (see the module docstring)."""
    if protocol == "grpc":
        limits = [
            ("grpc.max_send_message_length", _GRPC_MAX_SEND),
            ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
        ]
        return _Deadline(tc.InferenceServerClient(url=url, channel_args=limits), timeout)
    _cap_headers()
    client = tc.InferenceServerClient(url=url, connection_timeout=timeout, network_timeout=timeout)
    client._client_stub = _BoundedHttp(client._client_stub, timeout, MAX_RESPONSE_BYTES)
    return client


def connect(url: str, protocol: str, model: str, timeout: float = DEFAULT_TIMEOUT_S):
    """Return (client module, client, spec); one-line errors for server/model problems."""
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    from tritonclient.utils import InferenceServerException

    try:
        client = open_client(tc, url, protocol, timeout)
        live = client.is_server_live()
    except Exception as exc:  # connection errors differ per protocol and transport
        raise ClientError(f"cannot reach Triton at {url} ({protocol}): {_short(exc)}", 3) from None
    if not live:
        raise ClientError(f"Triton at {url} is not live", EXIT_UNREACHABLE)
    try:
        ready = client.is_model_ready(model)
    except (InferenceServerException, OSError) as exc:
        raise ClientError(f"model '{model}' on {url}: {_short(exc)}", EXIT_NO_MODEL) from None
    if not ready:
        known = _model_names(client)
        raise ClientError(
            f"model '{model}' is not available on {url} (ready models: {known})", EXIT_NO_MODEL
        )
    try:
        metadata = client.get_model_metadata(model)
        config = client.get_model_config(model)
    except (InferenceServerException, OSError) as exc:  # OSError: late or oversized
        raise ClientError(f"model '{model}' on {url}: {_short(exc)}", EXIT_NO_MODEL) from None
    except Exception as exc:  # not JSON, or nested past the parser's depth: not Triton
        raise ClientError(
            f"model '{model}' on {url}: not Triton's model metadata ({_short(exc)})",
            EXIT_NO_MODEL,
        ) from None
    if protocol == "grpc":
        config = config.config
    try:
        return tc, client, read_spec(metadata, config, model)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ClientError(
            f"model '{model}' on {url}: metadata or config not of Triton's shape "
            f"({type(exc).__name__}: {_short(exc)})",
            EXIT_NO_MODEL,
        ) from None


def _model_names(client) -> str:
    try:
        index = client.get_model_repository_index()
        entries = index if isinstance(index, list) else index.models
        names = sorted({_field(e, "name") for e in entries if str(_field(e, "state")) == "READY"})
        return ", ".join(names) or "none"
    except Exception:  # the index is only a hint in an error message
        return "unknown"


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _infer(tc, client, spec: InputSpec, model: str, batch: np.ndarray, top_k: int):
    inp = tc.InferInput(spec.input_name, list(batch.shape), spec.datatype)
    inp.set_data_from_numpy(batch)
    outputs = [tc.InferRequestedOutput(spec.output_name, class_count=top_k)]
    if spec.hand_output:
        outputs.append(tc.InferRequestedOutput(spec.hand_output))
    if spec.landmarks_output:
        outputs.append(tc.InferRequestedOutput(spec.landmarks_output))
    return client.infer(model, [inp], outputs=outputs)


def classify(tc, client, spec: InputSpec, model: str, batch: np.ndarray, top_k: int) -> list:
    """One request; returns [([(label, index, probability), ...], hand) per image].

    ``hand`` is None when the model has no HAND_FOUND output, else the flag, or the 21 landmarks
    (a list of [x, y, z]) when the model gives them and found a hand.
    """
    from tritonclient.utils import InferenceServerException

    try:
        result = _infer(tc, client, spec, model, batch, top_k)
    except Exception as exc:  # HTTP raises socket errors, gRPC InferenceServerException
        if not _server_live(client):
            raise ServerLost(_short(exc)) from None
        text = _short(exc) if isinstance(exc, InferenceServerException) else repr(exc)
        raise ClientError(f"inference failed: {text}", EXIT_INFER) from None
    # A model without batching (max_batch_size 0) takes one image with no batch axis.
    images = len(batch) if spec.max_batch_size > 0 else 1
    rows = _answer(result, spec.output_name, images, range(1, top_k + 1))
    found = [None] * images
    if spec.hand_output:
        flags = _answer(result, spec.hand_output, images, (1,))
        found = [bool(f > 0.5) for f in flags.reshape(-1)]
    if spec.landmarks_output:
        points = _answer(result, spec.landmarks_output, images, (63,)).reshape(images, 21, 3)
        found = [np.round(p.astype(float), 2).tolist() if f else f for p, f in zip(points, found)]
    return [([_class_entry(entry) for entry in row], hand) for row, hand in zip(rows, found)]


def _answer(result, name: str, images: int, per_image) -> np.ndarray:
    """The output ``name`` as one row per image, of a length in ``per_image``; any other
    answer (missing, another shape) is an inference failure, never printed as classes."""
    try:
        values = result.as_numpy(name)
    except Exception as exc:  # tritonclient decodes the answer here: any malformed part
        raise ClientError(
            f"inference failed: the server's {name} cannot be read ({_short(exc)})", EXIT_INFER
        ) from None
    size = 0 if values is None else values.size
    if size % images or size // images not in per_image:
        shape = "none" if values is None else list(values.shape)
        raise ClientError(
            f"inference failed: the server answered {name} of shape {shape} for {images} "
            "image(s)",
            EXIT_INFER,
        )
    return values.reshape(images, -1)


def _class_entry(entry) -> tuple[str, int, float]:
    """(label, index, probability) of one "probability:index[:label]" string."""
    text = entry.decode(errors="replace") if isinstance(entry, bytes) else str(entry)
    parts = text.split(":", 2)
    try:
        probability, number = float(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        probability, number = math.nan, -1
    if not math.isfinite(probability) or number < 0:
        raise ClientError(
            f"inference failed: the server answered {text[:80]!r}, not a probability for a "
            "class",
            EXIT_INFER,
        )
    return (parts[2] if len(parts) > 2 else parts[1], number, probability)


def read_encoded(path: Path, limit: int = MAX_FILE_BYTES) -> np.ndarray:
    """The file's bytes as a [1, 1] BYTES tensor; refuse a file over ``limit`` unread."""
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{size} bytes is over the {limit // (1024 * 1024)} MB limit; not sent")
    if size == 0:
        raise ValueError("empty file")
    return np.array([[path.read_bytes()]], dtype=np.object_)


def _result_item(path: Path, items: list, hand: bool | None) -> dict:
    item = {
        "image": str(path),
        "predictions": [
            {"label": label, "index": index, "probability": prob} for label, index, prob in items
        ],
    }
    if hand is not None:
        item["hand_found"] = bool(hand)
    if isinstance(hand, list):
        item["landmarks"] = hand
    return item


def classify_encoded(tc, client, spec: InputSpec, args, paths: list[Path]) -> tuple[list, int]:
    """Send each file's bytes, one per request, so that one bad file fails alone."""
    results, failed = [], 0
    for done, path in enumerate(paths):
        try:
            batch = read_encoded(path)
        except FileNotFoundError:
            failed += 1
            print(f"error: {path}: no such file", file=sys.stderr)
            continue
        except (ValueError, OSError) as exc:
            failed += 1
            print(f"error: {path}: {_short(exc)}", file=sys.stderr)
            continue
        try:
            ((items, hand),) = classify(tc, client, spec, args.model, batch, args.top_k)
        except ServerLost as lost:
            lost.results, lost.unanswered = results, len(paths) - done
            raise
        except ClientError as exc:
            failed += 1
            print(f"error: {path}: refused by the server ({exc})", file=sys.stderr)
            continue
        results.append(_result_item(path, items, hand))
    return results, failed


def collect_paths(images: list[str], dirs: list[str]) -> list[Path]:
    """The images to classify; a folder that is not one, or cannot be listed, is one line."""
    paths = [Path(p) for p in images]
    for d in dirs:
        folder = Path(d)
        try:
            if not folder.is_dir():
                raise ClientError(f"--dir {d} is not a directory", EXIT_BAD_IMAGE)
            paths += sorted(
                p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        except OSError as exc:  # denied, or gone while listed
            raise ClientError(
                f"--dir {d} cannot be read: {exc.strerror or exc}", EXIT_BAD_IMAGE
            ) from None
    if not paths:
        raise ClientError("no images given (use --image PATH or --dir DIR)", EXIT_BAD_IMAGE)
    return paths


def classify_decoded(tc, client, spec: InputSpec, args, paths: list[Path]) -> tuple[list, int]:
    """Decode and resize here, send each batch of up to max_batch_size images once it is full:
    memory holds one batch, however many files are given."""
    results, failed = [], 0
    image_bytes = spec.height * spec.width * 3 * (4 if spec.datatype == "FP32" else 1)
    step = max(1, min(spec.max_batch_size, MAX_BATCH_BYTES // image_bytes))
    chunk: list[tuple[Path, np.ndarray]] = []
    for done, path in enumerate(paths, start=1):
        try:
            chunk.append((path, to_array(decode_rgb(path), spec)))
        except FileNotFoundError:
            failed += 1
            print(f"error: {path}: no such file", file=sys.stderr)
        except (ValueError, OSError) as exc:
            failed += 1
            print(f"error: {path}: not an image ({_short(exc)})", file=sys.stderr)
        if not chunk or (len(chunk) < step and done < len(paths)):
            continue
        batch = np.stack([a for _, a in chunk]) if spec.max_batch_size > 0 else chunk[0][1]
        try:
            answers = classify(tc, client, spec, args.model, batch, args.top_k)
        except ServerLost as lost:
            lost.results, lost.unanswered = results, len(chunk) + len(paths) - done
            raise
        for (path, _), (items, hand) in zip(chunk, answers):
            results.append(_result_item(path, items, hand))
        chunk = []
    return results, failed


def print_results(results: list, as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for item in results:
        if item.get("hand_found") is False:
            print(f"{item['image']}: no hand found")
            continue
        best = item["predictions"][0]
        others = ", ".join(f"{p['label']} {p['probability']:.4f}" for p in item["predictions"][1:])
        line = f"{item['image']}: {best['label']} {best['probability']:.4f}"
        print(line + (f"  (then {others})" if others else ""))


def run(args: argparse.Namespace) -> int:
    paths = collect_paths(args.image or [], args.dir or [])
    url = args.url or ("localhost:8001" if args.protocol == "grpc" else "localhost:8000")
    tc, client, spec = connect(url, args.protocol, args.model, args.timeout)
    try:
        send = classify_encoded if spec.encoded else classify_decoded
        results, failed = send(tc, client, spec, args, paths)
    except ServerLost as lost:
        print_results(lost.results, args.json)  # what was answered before, then one line
        raise ClientError(
            f"Triton at {url} ({args.protocol}) stopped answering after {len(lost.results)} of "
            f"{len(paths)} images ({lost}); {lost.unanswered} not classified",
            EXIT_UNREACHABLE,
        ) from None
    finally:
        client.close()
    print_results(results, args.json)
    return EXIT_BAD_IMAGE if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Classify ASL alphabet images with Triton.")
    parser.add_argument("--image", action="append", help="image file (repeatable)")
    parser.add_argument("--dir", action="append", help="folder of images (repeatable)")
    parser.add_argument(
        "--url", default=None, help="HOST:PORT (default localhost:8000 http, :8001 grpc)"
    )
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--model", default="asl", help="served model name (default asl)")
    parser.add_argument("--top-k", type=int, default=1, help="classes to print per image")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds one call to the server may take in all (default {DEFAULT_TIMEOUT_S:g})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    # A file name that is not valid UTF-8 (kept as surrogates) must not lose the answers on a
    # strict UTF-8 stdout: it prints escaped instead.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    if args.top_k < 1:
        print("error: --top-k must be >= 1", file=sys.stderr)
        return 2
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        print("error: --timeout must be a number of seconds > 0", file=sys.stderr)
        return 2
    try:
        return run(args)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""JPEGs of several scans through the shared decoder (the hand step, the web page, training).

libjpeg decodes a JPEG of more than one scan (every progressive one) through a whole-image
buffer of coefficients, 2 bytes per sample at full size whatever ``draft`` asks, and walks all
of it once per scan. Every file here is written by the generators below, valid to libjpeg:
a few KB of empty scans must be refused from their markers, in milliseconds, not decoded.
"""

from __future__ import annotations

import io
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asl_recognition import imageio
from asl_recognition.imageio import ImageDecodeError, decode_pixels, load_rgb, read_header
from asl_recognition.paths import SAMPLE_DATA


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _frame(sof: int, width: int, height: int, components: int) -> bytes:
    """SOI, a quantization table of ones and a frame header of 1x1-sampled components."""
    header = struct.pack(">BHHB", 8, height, width, components)
    header += b"".join(bytes([c + 1, 0x11, 0]) for c in range(components))
    return b"\xff\xd8" + _segment(0xDB, b"\x00" + bytes([1] * 64)) + _segment(sof, header)


def empty_scans_jpeg(width: int, height: int, scans: int, components: int = 1) -> bytes:
    """A progressive JPEG (SOF2) of ``scans`` AC scans with no entropy-coded data: 10 bytes a
    scan, and libjpeg walks every block of the full-size buffer in each."""
    # AC table 0: the 15 end-of-band-run symbols, 4-bit codes (the EOBRUN of 16384 blocks first)
    symbols = bytes([0xE0] + [run << 4 for run in range(14)])
    data = _frame(0xC2, width, height, components)
    data += _segment(0xC4, b"\x10" + bytes([0, 0, 0, 15] + [0] * 12) + symbols)
    for scan in range(scans):
        data += _segment(0xDA, bytes([1, scan % components + 1, 0x00, 1, 63, 0x00]))
    return data + b"\xff\xd9"


def one_scan_per_component_jpeg(width: int, height: int, components: int = 3) -> bytes:
    """A baseline JPEG (SOF0) whose scans hold one component each: every block is two zero
    bits (DC 0, end of block), and libjpeg still keeps the whole image's coefficients."""
    data = _frame(0xC0, width, height, components)
    data += _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # DC: "0" -> size 0
    data += _segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")  # AC: "0" -> EOB
    blocks = -(-width // 8) * -(-height // 8)
    for component in range(components):
        data += _segment(0xDA, bytes([1, component + 1, 0x00, 0, 63, 0]))
        data += bytes(-(-blocks * 2 // 8))
    return data + b"\xff\xd9"


def photo_jpeg(size: tuple[int, int] = (200, 200), **save) -> bytes:
    """A bundled real frame, resized and saved as JPEG with Pillow's ``save`` options."""
    with Image.open(sorted((SAMPLE_DATA / "B").glob("*.jpg"))[0]) as img:
        frame = img.convert("RGB").resize(size)
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=90, **save)
    return out.getvalue()


def load_rgb_bytes(data: bytes, folder: Path) -> Image.Image:
    """``data`` decoded as training decodes a file."""
    path = folder / "file.jpg"
    path.write_bytes(data)
    return load_rgb(path)


def refused(source, match: str, within: float = 1.0) -> ImageDecodeError:
    """The decoder's refusal of ``source`` (a file or bytes), within ``within`` seconds."""
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=match) as caught:
        with read_header(source) as header:
            imageio.decode_rgb(header)
    assert time.perf_counter() - start < within
    return caught.value


def test_a_jpeg_of_thousands_of_empty_scans_is_refused_from_its_markers(tmp_path: Path) -> None:
    """Before: 6000 x 6000 in 5000 scans (70 KB, inside every size bound) cost 11 s of CPU."""
    bomb = empty_scans_jpeg(6000, 6000, 5000)
    (tmp_path / "scans.jpg").write_bytes(bomb)
    for source in (tmp_path / "scans.jpg", bomb):  # a file (training), bytes (hand step, web)
        error = refused(source, r"is a JPEG of over 100 scans \(a photo has about 10\)")
        assert error.reason == "decompression_bomb" and "\n" not in str(error)
    # one scan over the bound is refused, the bound itself decodes (every coefficient zero)
    refused(empty_scans_jpeg(64, 64, imageio.MAX_JPEG_SCANS + 1), "over 100 scans")
    grey = np.asarray(load_rgb_bytes(empty_scans_jpeg(64, 64, imageio.MAX_JPEG_SCANS), tmp_path))
    assert grey.shape == (64, 64, 3) and np.all(grey == 128)
    # the walk follows segment lengths and skips entropy-coded data: SOS bytes inside an APP
    # segment, stuffed bytes and restart markers of a real progressive photo count for nothing
    photo = photo_jpeg(progressive=True, restart_marker_blocks=1)
    assert photo.count(b"\xff\xd0") > 100 and imageio.jpeg_markers_problem(photo) == (10, None)
    fake_scans = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" * 200
    padded = photo[:2] + _segment(0xEF, fake_scans) + photo[2:]
    assert imageio.jpeg_markers_problem(padded) == (10, None)
    assert load_rgb_bytes(padded, tmp_path).size == (200, 200)


def test_a_jpeg_of_several_scans_counts_its_full_size_samples(tmp_path: Path) -> None:
    """Before: 158 bytes of 12600 x 12600 RGB in 3 progressive scans decoded through 1.1 GB
    (the bound assumed a 1/2-scale read); 6000 x 6000 in scans of one component each, too."""
    progressive = empty_scans_jpeg(6000, 6000, 3, components=3)
    assert len(progressive) < 200
    one_each = one_scan_per_component_jpeg(6000, 6000)
    for bomb in (progressive, one_each):
        error = refused(
            bomb,
            "is 6000x6000, 108000000 samples in its 3 component\\(s\\), over the bound of "
            "40000000 \\(a JPEG of several scans is held whole at full size, not reduced\\)",
        )
        assert error.reason == "decompression_bomb"
    (tmp_path / "p.jpg").write_bytes(empty_scans_jpeg(12_600, 12_600, 3, components=3))
    refused(tmp_path / "p.jpg", "12600x12600, 476280000 samples in its 3 component")
    # the hand step's per-request budget counts them too: a 4:2:0 progressive photo holds its
    # luma and two quarter-size chroma planes whole; a baseline one streams, read as pixels
    baseline, layered = photo_jpeg((2000, 1500)), photo_jpeg((2000, 1500), progressive=True)
    with read_header(baseline) as header:
        assert decode_pixels(header) == 3_000_000
    with read_header(layered) as header:
        assert header.info["jpeg_scans"] == 10 and decode_pixels(header) == 4_500_000
        assert imageio.decode_rgb(header).size == (2000, 1500)


def test_a_flood_of_empty_markers_is_refused_before_pillow_reads_them() -> None:
    """Pillow reads every segment before the first scan in Python, one by one (4.8 s for 25 MB
    of them); the walk stops at the bound instead."""
    photo = photo_jpeg()
    flood = photo[:2] + b"\xff\xfe\x00\x02" * 10_000 + photo[2:]  # empty comments
    refused(flood, r"is a JPEG of over 10000 markers \(a photo has a few dozen\)", within=0.5)
    with read_header(photo) as header:
        assert header.info["jpeg_scans"] == 1 and imageio.decode_rgb(header).size == (200, 200)


def test_a_file_over_the_byte_cap_is_refused_unread(tmp_path: Path) -> None:
    """Pillow's WebP reader reads the whole file while opening (a 3 GB one: MemoryError)."""
    webp = tmp_path / "padded.webp"
    with Image.open(sorted((SAMPLE_DATA / "B").glob("*.jpg"))[0]) as img:
        img.save(webp, "WEBP")
    os.truncate(webp, 25 * 1024 * 1024 + 1)  # sparse: no disk, nothing to read
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError) as caught:
        read_header(webp)
    assert time.perf_counter() - start < 0.5
    assert caught.value.reason == "file_too_large"
    assert caught.value.detail == (
        f"{webp} is 26214401 bytes, over the limit of 26214400 for a JPEG or WebP file (read "
        "whole to open)"
    )
    os.truncate(webp, 0)
    with pytest.raises(ImageDecodeError, match="has zero bytes"):
        read_header(webp)

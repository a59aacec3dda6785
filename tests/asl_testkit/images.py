"""Image files and folders a test writes: hostile PNGs (decompression bombs, 16-bit
colour) and a Kaggle-style slice of the bundled sample."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

from asl_recognition.classes import CLASSES

MERGED_PER_CLASS = 4  # Kaggle frames per class beside the Massey crops in the data tests


def kaggle_slice(
    sample_dir: Path, target: Path, start: int, per_class: int = MERGED_PER_CLASS
) -> Path:
    """Frames ``start``..``start+per_class`` of every class, copied as a Kaggle-style folder."""
    for cls in CLASSES:
        (target / cls).mkdir(parents=True)
        for src in sorted((sample_dir / cls).glob("*.jpg"))[start : start + per_class]:
            shutil.copyfile(src, target / cls / src.name)
    return target


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def bomb_png(path: Path, side: int) -> None:
    """A valid 1-bit PNG of side x side pixels whose zero rows compress to a few KB."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def padded_bomb_png(path: Path, width: int, height: int, pad: int = 0) -> Path:
    """A valid 8-bit RGB PNG of black rows (a few hundred KB for 160 MP), with ``pad`` junk
    bytes in an ancillary chunk before IDAT: the padding moves any pixels-per-byte ratio."""
    row = b"\x00" * (1 + 3 * width)
    per_block = max(1, (1 << 20) // len(row))
    blocks, last = divmod(height, per_block)
    # A full flush empties the window: every full block then deflates to the same bytes, so
    # 160 MP is built from one compressed block (zlib header + raw deflate + adler32 by hand).
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block, adler = row * per_block, 1
    comp.compress(block)
    comp.flush(zlib.Z_FULL_FLUSH)
    repeat = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    for _ in range(blocks):
        adler = zlib.adler32(block, adler)
    adler = zlib.adler32(row * last, adler)
    tail = comp.compress(row * last) + comp.flush()
    idat = b"\x78\xda" + repeat * blocks + tail + struct.pack(">I", adler)
    junk = _png_chunk(b"juNK", b"\x00" * pad) if pad else b""
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + junk
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
    return path


def png16(path: Path, pixels: np.ndarray) -> Path:
    """Write a 16-bit-per-channel PNG (grey, grey+alpha, RGB or RGBA from the last axis).

    Pillow cannot write 16-bit colour PNGs; this encodes the rows by hand (filter 0, zlib).
    """
    pixels = np.asarray(pixels, dtype=np.uint16)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = pixels.astype(">u2").reshape(height, width * channels).tobytes()
    stride = width * channels * 2
    raw = b"".join(b"\x00" + rows[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )
    return path


def rle8_bmp(path: Path, indices: np.ndarray, palette: bytes, noops: int = 0) -> Path:
    """An RLE8 BMP (runs of one index per row, bottom row first), after ``noops`` moves by
    (0, 0): commands that add no pixel, each a step of Pillow's Python decoder."""
    height, width = indices.shape
    body = bytearray(b"\x00\x02\x00\x00" * noops)
    for row in indices[::-1]:
        start = 0
        while start < width:
            end = start + 1
            while end < width and end - start < 255 and row[end] == row[start]:
                end += 1
            body += bytes((end - start, int(row[start])))
            start = end
        body += b"\x00\x00"  # end of line
    body += b"\x00\x01"  # end of bitmap
    offset = 14 + 40 + 1024
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(body), 0, 0, 256, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset)
    path.write_bytes(header + info + palette.ljust(1024, b"\x00") + bytes(body))
    return path


def icon_bomb(path: Path, side: int = 13_000) -> Path:
    """A real ICO whose one directory entry says 16x16 but whose embedded PNG is side x side
    black RGB (about 500 KB for 13,000): Pillow's ICO plugin decodes it inside ``Image.open``."""
    png = padded_bomb_png(path.with_suffix(".inner.png"), side, side).read_bytes()
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 6 + 16)
    path.write_bytes(struct.pack("<HHH", 0, 1, 1) + entry + png)
    return path


def one_tile_tiff(path: Path, grey: np.ndarray, tile: int) -> Path:
    """A deflate-compressed grey TIFF whose pixels sit in ONE ``tile`` x ``tile`` tile (padded
    with black): libtiff decodes through a buffer of that whole tile, whatever the picture."""
    height, width = grey.shape
    padded = np.zeros((tile, tile), np.uint8)
    padded[:height, :width] = grey
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row.tobytes()) for row in padded) + packer.flush()
    # (tag, type: 3 SHORT or 4 LONG, value): size, 8 bits, deflate, min-is-black, 1 sample
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1)]
    tags += [(277, 3, 1), (322, 4, tile), (323, 4, tile), (324, 4, 0), (325, 4, len(data))]
    start = 8 + 2 + 12 * len(tags) + 4
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        value = start if tag == 324 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data)
    return path

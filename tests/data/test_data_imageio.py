"""The one decoder: 16-bit to 8 bits, EXIF upright, alpha on black, big photos read reduced.

Every test image is a real frame from data/sample, transformed (bit depth, orientation, alpha,
upscaling); no pixel is invented.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from asl_testkit.images import bomb_png, icon_bomb, one_tile_tiff, padded_bomb_png, png16
from PIL import Image, ImageOps

from asl_recognition.data.scan import scan_source
from asl_recognition.imageio import ImageDecodeError, decode_rgb, load_rgb, read_header
from asl_recognition.paths import REPO_ROOT

TEST_IMAGES = REPO_ROOT / "data" / "test_images"

# How a camera stores an upright picture for each EXIF orientation (6: "turn 90 degrees
# clockwise to view", so it is stored turned 90 degrees counter-clockwise).
STORED_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.fixture(scope="module")
def frame(sample_dir: Path) -> np.ndarray:
    """A real 200x200 RGB Kaggle frame."""
    with Image.open(sorted((sample_dir / "B").glob("*.jpg"))[0]) as img:
        return np.asarray(img.convert("RGB"))


def _rgb(path: Path, **kwargs) -> np.ndarray:
    return np.asarray(load_rgb(path, **kwargs)).astype(int)


def test_16_bit_grey_png_keeps_its_tones(tmp_path: Path, frame: np.ndarray) -> None:
    grey = np.asarray(Image.fromarray(frame).convert("L"))
    # 8 -> 16 bits as a scanner writes it (v * 257), plus the low-byte detail 16 bits carry
    detail = np.arange(grey.size).reshape(grey.shape) % 97
    wide = np.minimum(grey.astype(np.int64) * 257 + detail, 65535)
    path = png16(tmp_path / "grey16.png", wide)
    with Image.open(path) as img:
        assert img.mode == "I;16"
    out = _rgb(path)
    assert np.abs(out - grey[:, :, None]).max() <= 1  # not white (Pillow's convert clips)
    assert out.min() < 100 < 200 < out.max()


def test_16_bit_colour_png_and_alpha(tmp_path: Path, frame: np.ndarray) -> None:
    path = png16(tmp_path / "rgb48.png", frame.astype(np.uint16) * 257)
    assert np.abs(_rgb(path) - frame).max() <= 1
    alpha = np.tile(np.linspace(0, 255, frame.shape[1]).astype(np.uint8), (frame.shape[0], 1))
    rgba = np.dstack([frame, alpha]).astype(np.uint16) * 257
    on_black = frame * (alpha[:, :, None] / 255.0)
    assert np.abs(_rgb(png16(tmp_path / "rgba64.png", rgba)) - on_black).max() <= 2


def test_alpha_is_composited_on_black(tmp_path: Path, frame: np.ndarray) -> None:
    alpha = np.tile(np.linspace(0, 255, frame.shape[0]).astype(np.uint8)[:, None], (1, 200))
    Image.fromarray(np.dstack([frame, alpha]), "RGBA").save(tmp_path / "a.png")
    on_black = frame * (alpha[:, :, None] / 255.0)
    assert np.abs(_rgb(tmp_path / "a.png") - on_black).max() <= 1


@pytest.mark.parametrize("orientation", sorted(STORED_FOR_ORIENTATION))
def test_exif_orientation_is_honoured(tmp_path: Path, frame: np.ndarray, orientation: int) -> None:
    upright = Image.fromarray(frame[:, :150])  # not square: a wrong turn changes the shape
    stored = upright.transpose(STORED_FOR_ORIENTATION[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "r.png", exif=exif)  # PNG: lossless, so pixels compare exactly
    assert np.array_equal(_rgb(tmp_path / "r.png"), np.asarray(upright))


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_an_uncompressed_tiff_turned_90_degrees_decodes_upright_from_path_and_bytes(
    tmp_path: Path, frame: np.ndarray, mode: str, orientation: int
) -> None:
    """Pillow memory-maps such a file at its upright size (rows scrambled); its bytes, as the
    hand step gets them, decode upright. The data step reads the path: both must agree."""
    from PIL import TiffImagePlugin

    upright = Image.fromarray(frame[:, :150]).convert("L")
    stored = upright.transpose(STORED_FOR_ORIENTATION[orientation])
    if mode == "I;16":
        stored = Image.fromarray(np.asarray(stored).astype(np.uint16) * 257)
    else:
        stored = stored.convert(mode)
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[0x0112] = orientation
    stored.save(tmp_path / "r.tif", tiffinfo=tags)  # uncompressed, as scanners often write
    from_bytes = np.asarray(decode_rgb(read_header((tmp_path / "r.tif").read_bytes())))
    want = np.asarray(upright.convert("RGB"))
    assert np.array_equal(from_bytes, want)
    assert np.array_equal(_rgb(tmp_path / "r.tif"), want)


@pytest.mark.parametrize("side", [1200, 1201])
def test_a_jpeg_over_the_pixel_limit_is_read_reduced(
    tmp_path: Path, frame: np.ndarray, side: int
) -> None:
    # a real frame upscaled to 1.44 MP against a 1 MP limit (the 40 MP case, scaled down); an
    # odd side too, which libjpeg's draft would otherwise decode whole (1201 // 601 == 1)
    big = Image.fromarray(frame).resize((side, side), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 3  # stored upside down
    path = tmp_path / "big.jpg"
    big.transpose(Image.Transpose.ROTATE_180).save(path, format="JPEG", exif=exif, quality=95)
    out = load_rgb(path, max_pixels=1_000_000)
    half = (side + 1) // 2
    assert out.size == (half, half)  # decoded at 1/2 by libjpeg, never whole
    with Image.open(path) as reference:
        reference.draft("RGB", (side // 2, side // 2))
        assert reference.size == (half, half)
        upright = np.asarray(reference.convert("RGB").transpose(Image.Transpose.ROTATE_180))
    assert np.array_equal(np.asarray(out), upright)

    (tmp_path / "src" / "B").mkdir(parents=True)
    path.rename(tmp_path / "src" / "B" / path.name)
    row = scan_source(tmp_path / "src", workers=1, max_pixels=1_000_000, progress=False)
    row = row.table.iloc[0]
    assert row["error"] is None and (row["width"], row["height"]) == (side, side)
    assert isinstance(row["phash"], str)


def test_a_png_over_the_pixel_limit_is_refused_undecoded(
    tmp_path: Path, frame: np.ndarray
) -> None:
    # PNG has no reduced decode: 1.44 MP would be decoded whole against a 1 MP bound
    Image.fromarray(frame).resize((1200, 1200)).save(tmp_path / "big.png")
    with pytest.raises(
        ImageDecodeError,
        match=r"1200x1200 = 1440000 pixels, over the bound of "
        r"1000000 \(a PNG image is decoded whole\)",
    ) as caught:
        load_rgb(tmp_path / "big.png", max_pixels=1_000_000)
    assert caught.value.reason == "decompression_bomb"
    bomb_png(tmp_path / "huge.png", 2100)
    with pytest.raises(ImageDecodeError, match="over the bound of 1000000"):
        load_rgb(tmp_path / "huge.png", max_pixels=1_000_000)


DECODE_ALL = """
import json, resource, sys, time
from asl_recognition.imageio import ImageDecodeError, load_rgb
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
out = []
for path in sys.argv[1:]:
    try:
        out.append(list(load_rgb(path).size))
    except ImageDecodeError as exc:
        out.append([exc.reason, exc.detail])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"out": out, "seconds": time.perf_counter() - start,
                  "grew_mb": (peak - before) / 1024}))
"""


def decode_in_subprocess(paths: list[Path]) -> dict:
    """Decode with the real bounds (40 MP) in a fresh process: its peak RSS is the decode's."""
    proc = subprocess.run(
        [sys.executable, "-c", DECODE_ALL, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real files: a 12,600 x 12,600 RGB PNG padded past the old 1,000-pixels-per-byte rule,
    and 1 x 30,000,000 / 30,000,000 x 1 strips (about 100 KB each)."""
    root = tmp_path_factory.mktemp("bombs")
    side = 12_600
    return {
        "padded": padded_bomb_png(root / "padded.png", side, side, pad=side * side // 1000 + 1),
        "tall": padded_bomb_png(root / "tall.png", 1, 30_000_000),
        "wide": padded_bomb_png(root / "wide.png", 30_000_000, 1),
    }


def test_bombs_are_refused_from_the_header_in_bounded_time_and_memory(bombs) -> None:
    assert bombs["padded"].stat().st_size > 12_600**2 // 1000  # passed the old ratio rule
    paths = [bombs["padded"], bombs["tall"], bombs["wide"]] + [bombs["padded"]] * 8
    result = decode_in_subprocess(paths)
    reasons = [row[0] for row in result["out"]]
    assert reasons == ["decompression_bomb"] * len(paths)
    assert "12600x12600 = 158760000 pixels, over the bound of 40000000" in result["out"][0][1]
    assert "1x30000000 pixels: a side over the bound of 20000" in result["out"][1][1]
    assert "30000000x1 pixels: a side over the bound of 20000" in result["out"][2][1]
    # before: 1.8 GB / 2-5 s for the padded PNG, 0.9 GB / 3 s for the tall strip
    assert result["grew_mb"] < 30, result
    assert result["seconds"] < 2, result


def test_normal_photos_decode_exactly_as_pillow_reads_them() -> None:
    photos = sorted(TEST_IMAGES.glob("*.jpg"))
    assert len(photos) >= 20
    for path in photos:
        with Image.open(path) as img:
            reference = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        assert np.array_equal(np.asarray(load_rgb(path)), reference), path
        with read_header(path.read_bytes()) as header:  # the hand step's bytes, same pixels
            assert np.array_equal(np.asarray(decode_rgb(header)), reference), path


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_grey_is_scaled_like_whole_array_maths(
    tmp_path: Path, frame: np.ndarray, mode: str
) -> None:
    grey = np.asarray(Image.fromarray(frame).convert("L")).astype(np.int64)
    big = np.tile(grey, (12, 30))  # 2400 x 6000: several row blocks of the scaler
    if mode == "I":
        values = (big * 257 + np.arange(big.size).reshape(big.shape) % 97).astype(np.int32)
        expected = np.clip((values.astype(np.int64) + 128) // 257, 0, 255)
    else:
        values = (big / 255.0).astype(np.float32)
        expected = np.clip(np.rint(values.astype(np.float64) * 255.0), 0, 255)
    Image.fromarray(values, mode).save(tmp_path / "grey.tif")
    out = np.asarray(load_rgb(tmp_path / "grey.tif"))
    assert np.array_equal(out, np.repeat(expected.astype(np.uint8)[:, :, None], 3, axis=2))


READ_HEADERS = """
import json, resource, sys, time
from pathlib import Path
from asl_recognition.imageio import ImageDecodeError, load_rgb, read_header
path = Path(sys.argv[1])
data = path.read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
out = []
for how in (load_rgb, read_header):
    try:
        how(path if how is load_rgb else data).close()
        out.append(["opened", ""])
    except ImageDecodeError as exc:
        out.append([exc.reason, exc.detail])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"out": out, "seconds": time.perf_counter() - start,
                  "grew_mb": (peak - before) / 1024}))
"""


def test_an_icon_hiding_a_huge_png_is_refused_unopened(tmp_path: Path) -> None:
    """The ICO header says 16x16; the PNG inside is 13,000 x 13,000 (169 MP, 507 MB decoded,
    under Pillow's default guard): before, Image.open decoded it whole (0.5-0.7 GB, ~1 s)."""
    ico = icon_bomb(tmp_path / "icon.ico")
    assert ico.stat().st_size < 1_000_000
    proc = subprocess.run(
        [sys.executable, "-c", READ_HEADERS, str(ico)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for reason, detail in result["out"]:  # the file (data stage) and its bytes (hand step)
        assert reason == "unsupported_format", result
        assert "in ICO format, refused unopened" in detail and "JPEG, PNG" in detail, detail
    assert result["grew_mb"] < 30, result  # before: 540 MB (time is bench's business)


def test_a_tiff_tile_counts_against_the_pixel_bound(tmp_path: Path, frame: np.ndarray) -> None:
    """A 64x64 picture in one 16384 x 16384 tile: 0.26 MB that libtiff decoded through a 268 MB
    tile (46320 a side: 2 GB from 2 MB), past every bound. A photo in tiles still decodes."""
    grey = np.asarray(Image.fromarray(frame).convert("L"))
    photo = one_tile_tiff(tmp_path / "photo.tif", grey, tile=208)  # 200x200 in a 208 tile
    assert np.array_equal(_rgb(photo), np.repeat(grey[:, :, None], 3, axis=2))
    bomb = one_tile_tiff(tmp_path / "bomb.tif", grey[:64, :64], tile=16_384)
    assert bomb.stat().st_size < 300_000
    for source in (bomb, bomb.read_bytes()):
        with pytest.raises(ImageDecodeError) as caught:
            read_header(source)
        assert caught.value.reason == "decompression_bomb"
        assert "in tiles of 16384x16384" in caught.value.detail


def test_a_truncated_jpeg_is_a_decode_error_not_an_oserror(tmp_path: Path) -> None:
    """The first 300 bytes of a real photo: Pillow's JPEG header parser raises a bare OSError
    ("Truncated File Read"), which callers catching only ImageDecodeError crashed on."""
    head = (TEST_IMAGES / "A_test.jpg").read_bytes()[:300]
    (tmp_path / "cut.jpg").write_bytes(head)
    for source in (tmp_path / "cut.jpg", head):
        with pytest.raises(ImageDecodeError, match="truncated or corrupt") as caught:
            load_rgb(source) if isinstance(source, Path) else read_header(source)
        assert caught.value.reason == "truncated_or_corrupt"
        assert "Truncated File Read" in caught.value.detail
    # a file-system error is still the caller's OSError, not the file's fault
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "missing.jpg")
    with pytest.raises(IsADirectoryError):
        load_rgb(tmp_path)


def tiff_with_float_offsets(path: Path) -> Path:
    """A TIFF whose StripOffsets tag is typed DOUBLE, as a flipped byte makes it: Pillow opens
    it and then seeks to a float while loading (TypeError, not an OSError)."""
    Image.new("RGB", (32, 32), (90, 60, 40)).save(path, "TIFF")
    data = bytearray(path.read_bytes())
    ifd = int.from_bytes(data[4:8], "little")
    for entry in range(ifd + 2, ifd + 2 + 12 * int.from_bytes(data[ifd : ifd + 2], "little"), 12):
        if int.from_bytes(data[entry : entry + 2], "little") == 273:  # StripOffsets
            data[entry + 2 : entry + 4] = (12).to_bytes(2, "little")  # DOUBLE, not LONG
    path.write_bytes(bytes(data))
    return path


def test_a_tiff_that_fails_while_loading_is_a_decode_error(tmp_path: Path) -> None:
    """Pillow's TIFF loader raised TypeError on such a file (found by mutating a TIFF's bytes):
    the hand step answered "hand pipeline: TypeError(...)" as an internal error of its own, and
    the live page blamed the model, not the photo."""
    path = tiff_with_float_offsets(tmp_path / "float-offsets.tif")
    with pytest.raises(ImageDecodeError) as caught:
        load_rgb(path)
    assert caught.value.reason == "truncated_or_corrupt", caught.value
    assert "float" in caught.value.detail


# A real HEIC (libheif through pillow-heif 1.9.0, from data/test_images/A_test.jpg at quality
# 60): an iPhone's default photo format, which no Pillow plugin reads.
HEIC = REPO_ROOT / "tests" / "fixtures" / "A_test.heic"


def test_a_run_length_bmp_of_more_bytes_than_its_pixels_need_is_refused_unread(
    tmp_path: Path, frame: np.ndarray
) -> None:
    """Pillow decodes RLE8 in Python: 25 MB of no-op moves before a 64x64 picture took 6 s of
    the hand step (and then decoded). A real picture in runs still decodes, as Pillow reads it."""
    import time

    from asl_testkit.images import rle8_bmp

    quantized = Image.fromarray(frame).quantize(256)
    indices = np.asarray(quantized)
    palette = bytes(
        b for rgb in np.reshape(quantized.getpalette()[:768], (-1, 3)) for b in (*rgb[::-1], 0)
    )
    photo = rle8_bmp(tmp_path / "photo.bmp", indices, palette)
    assert np.array_equal(_rgb(photo), np.asarray(quantized.convert("RGB")))
    bomb = rle8_bmp(tmp_path / "bomb.bmp", indices[:64, :64], palette, noops=1_000_000)
    for source in (bomb, bomb.read_bytes()):
        started = time.perf_counter()
        with pytest.raises(ImageDecodeError) as caught:
            read_header(source)
        assert time.perf_counter() - started < 0.5
        assert caught.value.reason == "decompression_bomb"
        assert "64x64 run-length BMP of 400" in caught.value.detail


def test_a_phones_heic_photo_is_named_and_quarantined_not_called_no_image(tmp_path) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        load_rgb(HEIC)
    assert caught.value.reason == "unsupported_format"
    assert "in HEIF (HEIC, a phone camera's default: export the photo as JPEG) format" in str(
        caught.value
    )
    (tmp_path / "src" / "A").mkdir(parents=True)
    (tmp_path / "src" / "A" / "IMG_0001.HEIC").write_bytes(HEIC.read_bytes())
    row = scan_source(tmp_path / "src", workers=1, progress=False).table.iloc[0]
    assert row["error"] == "unsupported_format", row.to_dict()


def test_a_named_pipe_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Reading a FIFO waits for a writer: load_rgb had blocked its caller for good."""
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    with pytest.raises(ImageDecodeError) as caught:
        load_rgb(pipe)
    assert caught.value.reason == "not_an_image" and "not a regular file" in caught.value.detail

"""The one decoder: 16-bit to 8 bits, EXIF upright, alpha on black, big photos read reduced.

Every test image is a real frame from data/sample, transformed (bit depth, orientation, alpha,
upscaling); no pixel is invented.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from asl_testkit import bomb_png, png16
from PIL import Image

from asl_recognition.data.scan import scan_source
from asl_recognition.imageio import ImageDecodeError, load_rgb

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


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_photo_over_the_pixel_limit_is_read_reduced(
    tmp_path: Path, frame: np.ndarray, fmt: str
) -> None:
    # a real frame upscaled to 1.44 MP against a 1 MP limit (the 40 MP case, scaled down)
    big = Image.fromarray(frame).resize((1200, 1200), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 3  # stored upside down
    path = tmp_path / f"big.{fmt.lower()}"
    big.transpose(Image.Transpose.ROTATE_180).save(path, format=fmt, exif=exif, quality=95)
    out = load_rgb(path, max_pixels=1_000_000)
    assert out.size[0] * out.size[1] <= 1_000_000 and out.size == (600, 600)
    small = np.asarray(out.resize((50, 50), Image.Resampling.BOX)).astype(int)
    reference = np.asarray(big.resize((50, 50), Image.Resampling.BOX)).astype(int)
    assert np.abs(small - reference).mean() < 3  # the same picture, upright

    (tmp_path / "src" / "B").mkdir(parents=True)
    path.rename(tmp_path / "src" / "B" / path.name)
    row = scan_source(tmp_path / "src", workers=1, max_pixels=1_000_000, progress=False)
    row = row.table.iloc[0]
    assert row["error"] is None and (row["width"], row["height"]) == (1200, 1200)
    assert isinstance(row["phash"], str)


def test_bombs_far_past_a_photo_are_still_refused(tmp_path: Path) -> None:
    # 1.44 MP of blank rows in a few hundred bytes: the same pixel count as the photo above
    bomb_png(tmp_path / "blank.png", 1200)
    assert (tmp_path / "blank.png").stat().st_size < 2000
    with pytest.raises(ImageDecodeError, match="pixels per byte") as caught:
        load_rgb(tmp_path / "blank.png", max_pixels=1_000_000)
    assert caught.value.reason == "decompression_bomb"
    bomb_png(tmp_path / "huge.png", 2100)  # 4.4 MP: over 4 x the limit, whatever its bytes
    with pytest.raises(ImageDecodeError, match="over 4000000"):
        load_rgb(tmp_path / "huge.png", max_pixels=1_000_000)

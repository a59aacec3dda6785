"""client.py decodes exactly as training does, run as the README shows it: alone, outside the
package's path (``python -I``, from ``/``), where ``asl_recognition`` cannot be imported.

Every file is made at test time from a real bundled frame (bit depth, alpha, palette, EXIF
orientation, CMYK, size); the client's arrays must equal ``asl_recognition.imageio``'s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from asl_testkit.images import icon_bomb, one_tile_tiff, padded_bomb_png, png16
from PIL import Image
from test_decode_progressive import empty_scans_jpeg, one_scan_per_component_jpeg, photo_jpeg
from test_serving_server import CLIENT, load_client_module

from asl_recognition import format_bounds, imageio
from asl_recognition.imageio import ImageDecodeError, load_rgb
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA

# A subprocess's first lines: client.py (argv[1]) loaded alone, as the README runs it.
LOAD_CLIENT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("client", sys.argv[1])
client = importlib.util.module_from_spec(spec)
sys.modules["client"] = client
spec.loader.exec_module(client)
"""

ISOLATED_DECODE = LOAD_CLIENT + """
import numpy as np
out = {}
for item in json.loads(sys.argv[3]):
    name, path, max_pixels = item
    try:
        path = __import__("pathlib").Path(path)
        bounded = () if max_pixels is None else (max_pixels,)
        img = client.decode_rgb(path, *bounded)
        np.save(f"{sys.argv[2]}/{name}.npy", np.asarray(img))
        out[name] = "ok"
    except (ValueError, TypeError) as exc:
        out[name] = "error: " + str(exc)
out["imported_package"] = "asl_recognition" in sys.modules
print(json.dumps(out))
"""


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    """name -> (file, max_pixels): what phones, scanners and editors write."""
    root = tmp_path_factory.mktemp("awkward")
    with Image.open(sorted((SAMPLE_DATA / "B").glob("*.jpg"))[0]) as img:
        frame = img.convert("RGB")
    pixels = np.asarray(frame)
    grey = np.asarray(frame.convert("L")).astype(np.uint16)
    alpha = np.tile(np.linspace(0, 255, 200).astype(np.uint8), (200, 1))
    files = {
        "grey16": png16(
            root / "grey16.png", grey * 257 + np.arange(grey.size).reshape(200, 200) % 97
        ),
        "rgb48": png16(root / "rgb48.png", pixels.astype(np.uint16) * 257),
        "rgba64": png16(root / "rgba64.png", np.dstack([pixels, alpha]).astype(np.uint16) * 257),
    }
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(root / "rgba.png")
    frame.convert("LA").save(root / "la.png")
    palette = frame.quantize(64)
    palette.save(root / "palette.png")
    palette.save(root / "palette_transparent.png", transparency=0)
    frame.convert("1").save(root / "bilevel.png")
    frame.crop((0, 0, 200, 120)).transpose(Image.Transpose.ROTATE_90).save(
        root / "rotated.jpg", exif=_exif(6), quality=90
    )
    frame.convert("CMYK").save(root / "cmyk.jpg", quality=90)
    frame.convert("L").transpose(Image.Transpose.ROTATE_180).save(
        root / "grey_rotated.png", exif=_exif(3)
    )
    frame.resize((1201, 1201), Image.Resampling.BICUBIC).save(root / "big.jpg", quality=90)
    Image.fromarray((grey.astype(np.int32) * 257), "I").save(root / "grey32.tif")
    Image.fromarray((grey / 255.0).astype(np.float32), "F").save(root / "float.tif")
    turned = Image.fromarray(grey.astype(np.uint8)[:, :120]).transpose(Image.Transpose.ROTATE_90)
    turned.save(root / "turned.tif", tiffinfo={0x0112: 6})  # uncompressed: Pillow would mmap it
    for name in ("rgba", "la", "palette", "palette_transparent", "bilevel", "grey_rotated"):
        files[name] = root / f"{name}.png"
    files.update(rotated=root / "rotated.jpg", cmyk=root / "cmyk.jpg", big=root / "big.jpg")
    files.update(grey32=root / "grey32.tif", float=root / "float.tif", turned=root / "turned.tif")
    bounds = {name: (path, imageio.MAX_PIXELS) for name, path in files.items()}
    bounds["big"] = (files["big"], 1_000_000)  # read at 1/2 scale by libjpeg, as training does
    bounds["padded_bomb"] = (
        padded_bomb_png(root / "bomb.png", 12_600, 12_600, 160_000),
        imageio.MAX_PIXELS,
    )
    bounds["tall"] = (padded_bomb_png(root / "tall.png", 1, 30_000_000), imageio.MAX_PIXELS)
    jpegs = {  # several scans: full-size samples counted, scans counted before decoding
        "progressive": photo_jpeg((300, 200), progressive=True),
        "scans_bomb": empty_scans_jpeg(6000, 6000, 500),
        "progressive_bomb": empty_scans_jpeg(12_600, 12_600, 3, components=3),
        "one_scan_per_component": one_scan_per_component_jpeg(3000, 3000),
    }
    for name, data in jpegs.items():
        (root / f"{name}.jpg").write_bytes(data)
        bounds[name] = (root / f"{name}.jpg", imageio.MAX_PIXELS)
    bounds["one_scan_per_component"] = (root / "one_scan_per_component.jpg", 20_000_000)
    return bounds


def run_isolated(script: str, *args: str) -> dict:
    """``script`` given ``client.py`` and ``args``, run alone (``-I``, from ``/``) as the README
    shows the client: what it printed, as JSON."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script, str(CLIENT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_client_decodes_like_training_without_the_package(awkward, tmp_path) -> None:
    items = [
        [name, str(path), None if limit == imageio.MAX_PIXELS else limit]
        for name, (path, limit) in awkward.items()
    ]
    answers = run_isolated(ISOLATED_DECODE, str(tmp_path), json.dumps(items))
    assert answers.pop("imported_package") is False
    for name, (path, limit) in awkward.items():
        try:
            expected = np.asarray(load_rgb(path, limit))
        except ImageDecodeError as exc:
            assert exc.reason == "decompression_bomb"
            assert answers[name].startswith("error: decompression bomb: "), name
            assert answers[name].split(": ", 2)[2] in exc.detail, name
            continue
        assert answers[name] == "ok", (name, answers[name])
        got = np.load(tmp_path / f"{name}.npy")
        assert got.dtype == np.uint8 and got.shape == expected.shape, name
        assert np.array_equal(got, expected), name
    # the awkward cases are really awkward: no plain convert("RGB") gives these pixels
    white = np.load(tmp_path / "grey16.npy")
    assert white.min() < 100 < 200 < white.max()
    assert np.load(tmp_path / "rotated.npy").shape == (120, 200, 3)
    turned = np.asarray(Image.open(awkward["grey32"][0]))[:, :120]  # the upright grey frame
    assert np.abs(np.load(tmp_path / "turned.npy")[..., 0] - turned // 257).max() <= 1
    assert np.load(tmp_path / "big.npy").shape == (601, 601, 3)
    assert np.load(tmp_path / "progressive.npy").shape == (200, 300, 3)
    assert answers["scans_bomb"].startswith("error: decompression bomb: a JPEG of over 100 sc")
    for name in ("progressive_bomb", "one_scan_per_component"):
        assert "samples in its 3 component(s), over the bound of" in answers[name], name


def test_the_client_copy_keeps_the_training_bounds() -> None:
    client = load_client_module()
    names = ("MAX_PIXELS", "MAX_SIDE", "JPEG_REDUCTION", "JPEG_FORMATS", "_BLOCK_VALUES")
    names += ("MAX_FILE_BYTES", "MAX_JPEG_SCANS", "MAX_JPEG_MARKERS", "JPEG_MAGIC", "_NEXT_MARKER")
    for name in names + (
        "ACCEPTED_FORMATS",
        "PILLOW_MAX_IMAGE_PIXELS",
        "HEIF_BRANDS",
        "HEIF_NAME",
    ):
        assert getattr(client, name) == getattr(imageio, name), name
    for name in ("BMP_RLE_COMPRESSIONS", "TIFF_TILE_TAGS"):
        assert getattr(client, name) == getattr(format_bounds, name), name


ISOLATED_HOSTILE = LOAD_CLIENT + """
import resource, time
from pathlib import Path
out = {}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
for path in sys.argv[2:]:
    try:
        client.decode_rgb(Path(path))
        out[path] = "ok"
    except ValueError as exc:
        out[path] = "error: " + str(exc)
    except OSError as exc:
        out[path] = "oserror: " + str(exc)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"out": out, "seconds": time.perf_counter() - start,
                  "grew_mb": (peak - before) / 1024}))
"""


def test_the_client_refuses_an_icon_bomb_and_names_a_truncated_jpeg(tmp_path: Path) -> None:
    """Run alone, as the README shows: the 16x16-says ICO hiding a 13,000 x 13,000 PNG is
    refused unopened (before: decoded whole, 0.5-0.7 GB), and a photo's first 300 bytes get
    the decoder's own sentence, as training's ``truncated_or_corrupt``."""
    ico = icon_bomb(tmp_path / "icon.ico")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes((REPO_ROOT / "data" / "test_images" / "A_test.jpg").read_bytes()[:300])
    result = run_isolated(ISOLATED_HOSTILE, str(ico), str(cut))
    assert result["out"][str(ico)].startswith("error: unsupported format: ICO, refused"), result
    assert result["out"][str(cut)] == "error: truncated or corrupt image (Truncated File Read)"
    assert result["grew_mb"] < 30, result  # before: 540 MB (time is bench's business)
    with pytest.raises(ImageDecodeError) as caught:  # the training decoder agrees
        load_rgb(ico)
    assert caught.value.reason == "unsupported_format"


def test_the_client_names_a_phones_heic_photo() -> None:
    """An iPhone's default format has no Pillow plugin: named, with what to do, not "not a
    readable image" (tests/fixtures/A_test.heic: a real HEIC, see test_data_imageio)."""
    client = load_client_module()
    with pytest.raises(ValueError, match=r"^unsupported format: HEIF \(HEIC, a phone camera"):
        client.decode_rgb(REPO_ROOT / "tests" / "fixtures" / "A_test.heic")


def test_a_large_uncompressed_file_within_the_pixel_bound_opens_in_both(tmp_path: Path) -> None:
    """The byte cap is for formats read whole to open (JPEG, WebP): a 27 MB BMP of 9 MP is
    streamed, and the client's copy opens it like training's does."""
    client = load_client_module()
    bmp = tmp_path / "big.bmp"
    Image.new("RGB", (3000, 3000), (200, 120, 90)).save(bmp)
    assert bmp.stat().st_size > imageio.MAX_FILE_BYTES
    for read_header in (imageio.read_header, client.read_header):
        with read_header(bmp) as img:
            assert img.size == (3000, 3000)


def test_the_client_counts_a_tiff_tile_like_training(tmp_path: Path) -> None:
    """A 64x64 TIFF in one 16384 x 16384 tile (libtiff decodes a whole tile): refused by both."""
    bomb = one_tile_tiff(tmp_path / "bomb.tif", np.zeros((64, 64), np.uint8), tile=16_384)
    result = run_isolated(ISOLATED_HOSTILE, str(bomb))
    answer = result["out"][str(bomb)]
    assert answer.startswith("error: decompression bomb: 64x64 in tiles of 16384x16384"), result
    assert result["grew_mb"] < 30, result  # before: 268 MB
    with pytest.raises(ImageDecodeError, match="in tiles of 16384x16384"):
        load_rgb(bomb)

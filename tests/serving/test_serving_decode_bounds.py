"""The hand step's decode bounds on the real tritonserver: every header of a request is read
before any pixel is decoded, so bombs and oversized batches are refused in bounded time and
memory, and the server answers normal photos right after.

The peak memory is the hand step's own: ``VmHWM`` of its Python-backend stub process.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from asl_testkit.images import padded_bomb_png
from test_decode_progressive import empty_scans_jpeg
from test_serving_hands import ask, fitted, hands_server  # noqa: F401 - fixtures
from test_serving_server import run_client
from tritonclient.utils import InferenceServerException

from asl_recognition.imageio import MAX_PIXELS, MAX_REQUEST_PIXELS

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    side = 12_600  # 158.8 MP: under the old 160 MP cut, padded past the old ratio rule
    return {
        "padded": padded_bomb_png(root / "padded.png", side, side, pad=side * side // 1000 + 1),
        "tall": padded_bomb_png(root / "tall.png", 1, 30_000_000),
        # 30 MP each, under the per-image bound: three are over the per-request one
        "legal": padded_bomb_png(root / "legal.png", 6000, 5000),
    }


def stub_peak_mb(server, model: str) -> float:
    """Peak RSS (VmHWM) of the Python-backend stub serving ``model``, a child of the server."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parent = int(fields["PPid"].strip())
        if parent == server.process.pid and f"/{model}/" in cmdline:
            return int(fields["VmHWM"].split()[0]) / 1024
    raise AssertionError(f"no Python stub for {model} under pid {server.process.pid}")


def refused(server, blobs: list[bytes], match: str) -> float:
    """Seconds the ensemble took to refuse one request of ``blobs`` with ``match``."""
    start = time.monotonic()
    with pytest.raises(InferenceServerException, match=match):
        ask(server, "asl", blobs, ["PROBS"])
    return time.monotonic() - start


def test_bombs_are_refused_undecoded_in_bounded_time_and_memory(
    hands_server, fitted, bombs  # noqa: F811
) -> None:
    photo = fitted["photos"][0].read_bytes()
    assert ask(hands_server, "asl", [photo], ["HAND_FOUND"])["HAND_FOUND"][0, 0] == 1
    peak = stub_peak_mb(hands_server, "asl_hands")
    padded, tall = bombs["padded"].read_bytes(), bombs["tall"].read_bytes()
    assert len(padded) > 12_600**2 // 1000  # the old ratio rule let it through
    seconds = refused(hands_server, [padded], "12600x12600 = 158760000 pixels, over the bound")
    assert seconds < 3
    seconds = refused(hands_server, [tall], "1x30000000 pixels: a side over the bound of 20000")
    assert seconds < 3
    seconds = refused(hands_server, [padded] * 8, "image 0 of 8: IMAGE decompression_bomb")
    assert seconds < 3  # before: 24 s for eight
    # before: 1.8 GB for one padded bomb; now not one of their pixels is decoded
    assert stub_peak_mb(hands_server, "asl_hands") - peak < 50
    assert ask(hands_server, "asl", [photo], ["HAND_FOUND"])["HAND_FOUND"][0, 0] == 1


def test_jpeg_bombs_of_empty_scans_are_refused_from_their_markers(
    hands_server, fitted  # noqa: F811
) -> None:
    """Before: 10 KB of 12600 x 12600 in 1000 empty progressive scans held the hand step 10 s,
    and 158 bytes of it in RGB, 3 scans, decoded through a 1.1 GB buffer of coefficients."""
    peak = stub_peak_mb(hands_server, "asl_hands")
    scans = empty_scans_jpeg(12_600, 12_600, 1000)
    assert refused(hands_server, [scans], "IMAGE decompression_bomb: .* over 100 scans") < 3
    layered = empty_scans_jpeg(12_600, 12_600, 3, components=3)
    assert len(layered) < 200
    match = "12600x12600, 476280000 samples in its 3 component"
    assert refused(hands_server, [layered], match) < 3
    assert stub_peak_mb(hands_server, "asl_hands") - peak < 50
    photo = fitted["photos"][0].read_bytes()
    assert ask(hands_server, "asl", [photo], ["HAND_FOUND"])["HAND_FOUND"][0, 0] == 1


def test_a_request_over_the_pixel_budget_is_refused_before_decoding(
    hands_server, fitted, bombs  # noqa: F811
) -> None:
    legal = bombs["legal"].read_bytes()
    assert 3 * 30_000_000 > MAX_REQUEST_PIXELS >= 2 * 30_000_000 and 30_000_000 <= MAX_PIXELS
    peak = stub_peak_mb(hands_server, "asl_hands")
    match = (
        f"the request's 3 image\\(s\\) would decode to 90000000 pixels, over the limit of "
        f"{MAX_REQUEST_PIXELS} per request"
    )
    assert refused(hands_server, [legal] * 3, match) < 3
    assert stub_peak_mb(hands_server, "asl_hands") - peak < 50
    photo = fitted["photos"][0].read_bytes()
    got = ask(hands_server, "asl", [photo, photo], ["HAND_FOUND"])["HAND_FOUND"]
    assert got.reshape(-1).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_refuses_a_model_whose_output_is_not_class_probabilities(
    hands_server, fitted, protocol  # noqa: F811
) -> None:
    url = hands_server.http_url if protocol == "http" else hands_server.grpc_url
    photo = str(fitted["photos"][0])
    args = ["--image", photo, "--url", url, "--protocol", protocol]
    proc = run_client(*args, "--model", "asl_hands")
    assert proc.returncode == 4 and proc.stdout == ""
    assert proc.stderr.strip() == (
        "error: model 'asl_hands' does not output class probabilities: none of its outputs "
        "(FEATURES [63], HAND_FOUND [1], HAND_BOX [4], LANDMARKS [21, 3]) has class labels in "
        "its config; ask the model that classifies (such as 'asl')"
    )
    proc = run_client(*args, "--model", "asl")
    assert proc.returncode == 0 and proc.stdout.startswith(f"{photo}: "), proc.stderr

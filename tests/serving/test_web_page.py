"""The live recognition page in a real headless chromium, on a real tritonserver.

The fake camera plays a Y4M made from the bundled test photos L, A, B and one without a hand;
the page must show those letters with their landmarks' box, "no hand", and spell "LAB". Photo
mode goes through the file chooser; a frame without an answer clears the one shown. Then Triton
is stopped: the page says so, and answers within seconds once it is back on the same ports. One
Triton and one app serve the whole module. The app's own refusals (a Content-Length that is not
a size, a model that takes no photos) are checked too; its other limits: test_web_limits.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from unittest.mock import create_autospec

import httpx
import pytest
from asl_testkit.cdp import Chromium, find_chromium, write_y4m
from asl_testkit.servers import BackgroundLoop
from asl_testkit.web import CAMERA_SIDE, photo, serve_landmark_model, start_web

from asl_recognition.paths import REPO_ROOT
from asl_recognition.web.options import WebOptions

pytestmark = pytest.mark.server
WORD = "LAB"
ARTIFACTS = REPO_ROOT / "test-artifacts"
# The README's screenshot: written when missing or on request (ASL_UPDATE_DOCS_SCREENSHOT=1),
# so that test runs do not dirty a tracked file; every run keeps its own under test-artifacts.
SCREENSHOT = REPO_ROOT / "docs" / "live-page.png"
OTHER_NAME = "asl-demo.test"  # the app's name on a network (--allowed-hosts), not loopback's


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not find_chromium():
        pytest.skip("chromium missing: run scripts/install_system_deps.sh")
    root = tmp_path_factory.mktemp("web_page")
    server, _repo = serve_landmark_model(root)
    web = start_web(
        server.grpc_url, hold_ms=600, frame_interval_ms=100, rate=50.0, allowed_hosts=[OTHER_NAME]
    )
    yield server, web, root
    web.stop()
    server.stop()


@pytest.fixture(scope="module")
def browser(served):
    _server, _web, root = served
    video = write_y4m(
        root / "camera.y4m", [photo(c) for c in WORD] + [photo("nothing")], 20, 10, CAMERA_SIDE
    )
    chromium = Chromium(
        root / "profile",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
        width=1100,
        height=760,
    )
    yield chromium
    chromium.close()


def test_the_webcam_spells_the_word(served, browser) -> None:
    _server, web, _root = served
    browser.goto(web.url + "/")
    browser.wait_for("document.getElementById('triton').dataset.state === 'ready'")
    spelled = browser.wait_for(
        f"document.getElementById('spelled').textContent.includes('{WORD}') && "
        "document.getElementById('spelled').textContent",
        timeout=45,
    )
    assert set(spelled) <= set(WORD), spelled
    browser.wait_for("document.getElementById('letter').textContent === 'no hand'", timeout=15)
    answers = browser.evaluate("window.aslPage.answers")
    seen = {a["top"][0]["label"] for a in answers if a["hand"]}
    assert set(WORD) <= seen, seen
    with_hand = [a for a in answers if a["hand"]]
    assert all(a["box"] and len(a["top"]) == 3 for a in with_hand)
    assert all(len(a["landmarks"]) == 21 for a in with_hand), "the ensemble gave no LANDMARKS"
    assert browser.evaluate("Number(document.getElementById('rtt').textContent)") > 0
    browser.wait_for("document.getElementById('letter').textContent === 'A'", timeout=15)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.screenshot(ARTIFACTS / "live-page.png")
    assert (ARTIFACTS / "live-page.png").stat().st_size > 10_000
    if not SCREENSHOT.exists() or os.environ.get("ASL_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copy(ARTIFACTS / "live-page.png", SCREENSHOT)


def test_photo_mode_through_the_file_chooser(served, browser) -> None:
    _server, web, _root = served
    browser.goto(web.url + "/?mode=photo")
    browser.evaluate("window.aslPage.answers = []")
    browser.set_files("#file", photo("B"))
    answer = browser.wait_for("window.aslPage.answers[0]")
    assert answer["hand"] and answer["top"][0]["label"] == "B"
    assert browser.evaluate("document.getElementById('letter').textContent") == "B"
    assert browser.evaluate("document.getElementById('photo').naturalWidth") == 200


SHOWN = "['letter', 'probability', 'rtt', 'server-ms'].map((id) => $(id).textContent)"


def test_a_refused_photo_does_not_leave_the_last_answer_on_show(served, browser, tmp_path):
    """A frame the app refuses (here 415, an icon) had left the photo before's letter,
    probability, next two and timing on show, as if they were the new photo's answer."""
    from asl_testkit.images import icon_bomb

    _server, web, _root = served
    browser.goto(web.url + "/?mode=photo")
    browser.evaluate("window.aslPage.answers = []")
    browser.set_files("#file", photo("B"))
    browser.wait_for("window.aslPage.answers[0]")
    assert browser.evaluate(SHOWN)[0] == "B"
    browser.set_files("#file", icon_bomb(tmp_path / "refused.ico", side=64))
    error = browser.wait_for("!$('error').hidden && $('error').textContent")
    assert "ICO format" in error, error
    assert browser.evaluate(SHOWN) == ["\u2013", "", "\u2013", "\u2013"]
    assert browser.evaluate("$('next').children.length") == 0


# A stand-in for a slow upload (named as such): the page's first frame POST is answered 2 s
# late, every other one as it comes; window.framePosts counts those sent and those answered.
SLOW_FIRST_FRAME = """
window.framePosts = { sent: 0, done: 0 };
const realFetch = window.fetch, late = [true];
window.fetch = async (url, options) => {
  if (url !== "/api/frame") return realFetch(url, options);
  window.framePosts.sent += 1;
  const answer = await realFetch(url, options);
  if (late.pop()) await new Promise((done) => setTimeout(done, 2000));
  window.framePosts.done += 1;
  return answer;
};
"""


def test_a_late_answer_to_an_earlier_photo_is_not_shown_for_the_next(served, browser) -> None:
    """A photo chosen while the one before was still on its way (a large photo on a slow
    link) had its letter and landmarks replaced by the earlier photo's late answer."""
    _server, web, _root = served
    browser.goto(web.url + "/?mode=photo")
    browser.evaluate("window.aslPage.answers = []")
    browser.evaluate(SLOW_FIRST_FRAME)
    browser.set_files("#file", photo("A"))
    browser.wait_for("window.framePosts.sent === 1")
    browser.set_files("#file", photo("B"))
    browser.wait_for("window.framePosts.done === 2", timeout=30)
    time.sleep(0.3)  # the late answer's JSON read and shown, had it been
    assert browser.evaluate("$('letter').textContent") == "B"
    shown = [a["top"][0]["label"] for a in browser.evaluate("window.aslPage.answers")]
    assert shown == ["B"], shown


def test_a_failed_webcam_frame_clears_the_letter_and_its_hold(served, browser) -> None:
    """A webcam frame not answered (here the network fails) left the last letter on show and
    its hold counting towards the spelled line."""
    _server, web, _root = served
    browser.goto(web.url + "/")
    browser.wait_for("window.aslPage.speller.candidate !== null", timeout=30)
    browser.evaluate("window.fetch = () => Promise.reject(new TypeError('network down'))")
    browser.wait_for(f"{SHOWN}[0] === '\u2013' && window.aslPage.speller.candidate === null")


def test_a_busy_page_server_is_not_reported_as_triton_down(served, browser) -> None:
    """With every connection taken, uvicorn answers its own plain-text 503: the page had said
    "Triton is down" though Triton was fine."""
    _server, web, _root = served
    browser.goto(web.url + "/?mode=photo")
    browser.wait_for("document.getElementById('triton').dataset.state === 'ready'", timeout=30)
    browser.evaluate(
        "window.fetch = () => Promise.resolve(new Response('Service Unavailable', "
        "{status: 503, headers: {'content-type': 'text/plain'}}))"
    )
    shown = browser.wait_for(
        "document.getElementById('triton').dataset.state === 'busy' && "
        "document.getElementById('triton').textContent"
    )
    assert shown == "The page's server is busy (HTTP 503); retrying", shown


def test_off_loopback_over_http_the_page_says_why_there_is_no_camera(served, tmp_path) -> None:
    """Browsers give the camera only to https or localhost/127.0.0.1 pages. Opened by another
    name over http (one in --allowed-hosts, mapped to loopback by the browser), the page says
    so, and photo mode works."""
    _server, web, _root = served
    port = web.url.rsplit(":", 1)[1]
    chromium = Chromium(tmp_path / "profile", f"--host-resolver-rules=MAP {OTHER_NAME} 127.0.0.1")
    try:
        chromium.goto(f"http://{OTHER_NAME}:{port}/")
        message = chromium.wait_for(
            "!document.getElementById('camera-message').hidden && "
            "document.getElementById('camera-message').textContent"
        )
        assert chromium.evaluate("window.isSecureContext") is False
        assert "only to pages on localhost/127.0.0.1 or HTTPS" in message, message
        assert f"open http://127.0.0.1:{port}/" in message and "Photo mode works" in message
        chromium.evaluate("document.getElementById('mode-photo').click()")
        chromium.evaluate("window.aslPage.answers = []")
        chromium.set_files("#file", photo("A"))
        answer = chromium.wait_for("window.aslPage.answers[0]")
        assert answer["hand"] and answer["top"][0]["label"] == "A"
    finally:
        chromium.close()


def good_frame(url: str) -> None:
    """The server still answers a real photo after a refusal."""
    answer = httpx.post(url + "/api/frame", content=photo("L").read_bytes(), timeout=30)
    assert answer.status_code == 200 and answer.json()["top"][0]["label"] == "L", answer.text


def test_bad_frames_get_their_answer_and_the_server_keeps_serving(served) -> None:
    _server, web, _root = served
    url = web.url + "/api/frame"
    too_big = httpx.post(url, content=b"\xff" * (8 * 1024 * 1024 + 1), timeout=30)
    assert too_big.status_code == 413 and "limit is 8388608 bytes" in too_big.json()["error"]
    good_frame(web.url)
    for junk in (b"GIF89a not really", b"%PDF-1.4 a document", b"\x00" * 100):
        answer = httpx.post(url, content=junk, timeout=30)
        assert answer.status_code == 415, answer.text
        assert answer.json()["error"].startswith("not an image the model can read")
    good_frame(web.url)
    foreign = {"Origin": "http://evil.example", "Content-Type": "image/jpeg"}
    answer = httpx.post(url, content=photo("A").read_bytes(), headers=foreign, timeout=30)
    assert answer.status_code == 403 and "cross-origin" in answer.json()["error"]
    page = httpx.get(web.url + "/", headers={"Origin": "http://evil.example"})
    assert not [h for h in page.headers if h.lower().startswith("access-control-")]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    own = {"Origin": web.url, "Content-Type": "image/jpeg"}
    answer = httpx.post(url, content=photo("L").read_bytes(), headers=own, timeout=30)
    assert answer.status_code == 200, answer.text


def test_a_fast_client_gets_429_not_a_queue(served) -> None:
    server, _web, _root = served
    strict = start_web(server.grpc_url, rate=1.0, burst=3, frame_interval_ms=1000)
    try:
        answers = [
            httpx.post(strict.url + "/api/frame", content=b"x", timeout=30) for _ in range(6)
        ]
        codes = [answer.status_code for answer in answers]
        assert codes[:3] == [415] * 3 and codes[3:] == [429] * 3, codes
        # read from the refusals themselves: a seventh request on a busy machine can come a
        # second later, when the bucket has a token again (a 415, without Retry-After)
        assert all(int(answer.headers["Retry-After"]) >= 1 for answer in answers[3:])
        time.sleep(1.1)
        good_frame(strict.url)
    finally:
        strict.stop()


def test_a_page_faster_than_the_rate_is_refused_at_the_start() -> None:
    """The page sends a frame every --frame-interval-ms; above --rate its own frames got 429."""
    cmd = [sys.executable, "-m", "asl_recognition.web", "--frame-interval-ms", "20"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 2 and last == (
        "python -m asl_recognition.web: error: --frame-interval-ms 20 sends up to 50.0 frames/s, "
        "over --rate 15: the page's own frames would be refused (429); raise --rate or the "
        "interval"
    )
    assert WebOptions(frame_interval_ms=20, rate=0).rate == 0  # no limit: any interval
    assert WebOptions(frame_interval_ms=67).frame_interval_ms == 67  # 14.9 frames/s fits 15


def test_triton_down_is_shown_and_recovers(served, browser) -> None:
    server, web, _root = served
    browser.goto(web.url + "/")
    browser.wait_for("document.getElementById('triton').dataset.state === 'ready'")
    server.stop()
    text = browser.wait_for(
        "document.getElementById('triton').dataset.state === 'down' && "
        "document.getElementById('triton').textContent",
        timeout=30,
    )
    assert "Triton is down" in text
    server.start_ready(90)
    browser.evaluate("window.aslPage.answers = []")
    browser.wait_for("document.getElementById('triton').dataset.state === 'ready'", timeout=60)
    browser.wait_for("window.aslPage.answers.length > 2", timeout=30)


class HealthPoll(BackgroundLoop):
    """The page's own poll of ``/api/health``, twice a second: its status line's source."""

    period = 0.5

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def tick(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(self.url + "/api/health", timeout=5)


def play_dead(port: int, seconds: float) -> list[float]:
    """Triton's gRPC port held for ``seconds`` by a listener that resets every connection, then
    until the next one: when the page's gRPC channel tried to reconnect (seconds from start)."""
    tries, start = [], time.monotonic()
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(0.5)
        while not tries or tries[-1] < seconds:
            assert time.monotonic() - start < seconds + 60, f"no reconnection after {tries}"
            with contextlib.suppress(socket.timeout):
                conn, _ = listener.accept()
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                tries.append(round(time.monotonic() - start, 1))
    return tries


def test_the_page_answers_within_seconds_of_tritons_return(served) -> None:
    """gRPC's reconnect backoff grows while Triton is down (to 120 s), and every call fails at
    once until the next try: the page said "Triton is down" for up to two minutes after it was
    back. After 25 s dead (the default backoff then waits 13 s or more), Triton starts right
    after a try; the page answers within seconds of it being ready."""
    server, web, _root = served
    server.stop()
    with HealthPoll(web.url):
        tries = play_dead(server.grpc_port, 25)
        server.start_ready(90)
        back, status = time.monotonic(), 0
        while status != 200 and time.monotonic() - back < 30:
            time.sleep(0.2)
            status = httpx.get(web.url + "/api/health", timeout=5).status_code
    took = time.monotonic() - back
    assert status == 200 and took < 5, f"answered {took:.1f} s after Triton; tries at {tries}"


def post_to_app(app, headers: dict[str, str], content: bytes = b"x") -> httpx.Response:
    """One POST straight into the ASGI app: uvicorn's h11 answers a non-numeric Content-Length
    itself, so only the app's own handling of one is tested this way."""

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.post("/api/frame", content=content, headers=headers)

    return asyncio.run(post())


def test_a_content_length_that_is_not_a_size_gets_400_like_the_front() -> None:
    from asl_recognition.web.app import create_app

    app = create_app(WebOptions(triton="127.0.0.1:1"))
    answer = post_to_app(app, {"Content-Length": "abc"})
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": "Content-Length 'abc' is not a size"}
    too_big = post_to_app(app, {"Content-Length": str(9 * 1024 * 1024)})
    assert too_big.status_code == 413 and too_big.headers["connection"] == "close"
    assert too_big.json()["error"].startswith("the frame is 9437184 bytes; the limit is")


def pixel_model_metadata():
    """A classifier's metadata and config as Triton's gRPC gives them: FEATURES (FP32) in."""
    from tritonclient.grpc import model_config_pb2, service_pb2

    metadata = service_pb2.ModelMetadataResponse(name="asl_onnx")
    metadata.inputs.add(name="FEATURES", datatype="FP32", shape=[-1, 64])
    config = service_pb2.ModelConfigResponse(config=model_config_pb2.ModelConfig(name="asl_onnx"))
    return metadata, config


def test_a_model_without_photo_input_is_read_once_until_triton_is_down() -> None:
    """Frames are refused with the configuration sentence from memory, no metadata call each;
    Triton unreachable (the page's health poll) makes the link read the model again."""
    import tritonclient.grpc.aio as tc_aio

    from asl_recognition.web.triton_link import ModelUnfit, TritonLink

    mock_client = create_autospec(tc_aio.InferenceServerClient, instance=True)
    metadata, config = pixel_model_metadata()
    mock_client.is_model_ready.return_value = True
    mock_client.get_model_metadata.return_value = metadata
    mock_client.get_model_config.return_value = config
    link = TritonLink("127.0.0.1:1", "asl_onnx")
    link._client = mock_client

    async def frames(count: int) -> list[str]:
        refusals = []
        for _ in range(count):
            with pytest.raises(ModelUnfit) as refused:
                await link.classify(b"photo")
            refusals.append(str(refused.value))
        return refusals

    refusals = asyncio.run(frames(3))
    assert set(refusals) == {"model 'asl_onnx' does not take photo bytes (a landmark ensemble "
                             "does); the page needs a landmark model"}  # fmt: skip
    assert mock_client.get_model_metadata.await_count == 1
    mock_client.infer.assert_not_awaited()
    mock_client.is_server_ready.side_effect = ConnectionError("connection refused")
    assert asyncio.run(link.ready())[0] is False
    asyncio.run(frames(1))
    assert mock_client.get_model_metadata.await_count == 2


def test_a_model_that_takes_no_photos_gets_503_with_its_sentence(served) -> None:
    """The served classifier alone (FEATURES in): the frame is not blamed (not 422)."""
    server, _web, _root = served
    web = start_web(server.grpc_url, model="asl_onnx")
    try:
        for _ in range(2):
            answer = httpx.post(
                web.url + "/api/frame", content=photo("A").read_bytes(), timeout=30
            )
            assert answer.status_code == 503, answer.text
            assert answer.json() == {
                "error": "model 'asl_onnx' does not take photo bytes (a landmark ensemble does); "
                "the page needs a landmark model"
            }
        health = httpx.get(web.url + "/api/health", timeout=30)
        assert health.status_code == 503 and "does not take photo bytes" in health.text
    finally:
        web.stop()

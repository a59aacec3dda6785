"""What one client may cost the live page's app, with no Triton behind it (``start_web``'s
default endpoint answers nothing, so a frame past every check gets 503 "Triton is down"): image
headers (415, and 413 past the page's pixel cap), frames in flight per address, the rate limit
that ``X-Forwarded-For`` does not move, the ``Host`` header (DNS rebinding), connections per
address, and bodies trickled in. Real servers on loopback; clients use their own 127.0.0.x
source addresses where the test is about addresses.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asl_testkit.web import photo, start_web
from PIL import Image

pytestmark = pytest.mark.server


@contextlib.contextmanager
def web_app(**changes) -> Iterator:
    web = start_web(**changes)
    try:
        yield web
    finally:
        web.stop()


def post(port: int, body: bytes, source: str = "127.0.0.1", headers: dict | None = None):
    """(status, JSON) of one POST /api/frame from ``source``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", "/api/frame", body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def encoded(size: tuple[int, int], fmt: str, **save) -> bytes:
    out = io.BytesIO()
    Image.new("RGB" if fmt == "JPEG" else "L", size, 90).save(out, fmt, **save)
    return out.getvalue()


def test_an_image_over_the_pixel_cap_gets_413_and_a_phone_photo_passes(tmp_path: Path) -> None:
    """A 34-byte lossless WebP of 6300 x 6300 (and a 40 MP PNG of a few KB) passed: the hand
    step then took seconds and a gigabyte for it. Now the header is measured against 16 MP as
    the hand step decodes it; a 12 MP phone photo still goes on to Triton (here: 503, none)."""
    from asl_testkit.images import padded_bomb_png

    bombs = {
        "webp": encoded((6300, 6300), "WEBP", lossless=True, quality=0, method=0),
        "png": padded_bomb_png(tmp_path / "big.png", 6300, 6300).read_bytes(),
        "jpeg": encoded((5000, 4000), "JPEG"),  # under 40 MP a JPEG is decoded whole
    }
    with web_app() as web:
        for name, body in bombs.items():
            status, text = post(web.port, body)
            assert status == 413, (name, text)
            assert b"decodes to" in text and b"the limit is 16000000 (16 MP)" in text, text
        # 12 MP phone photos, baseline and progressive (a progressive 4:2:0 one holds 18 M
        # samples, 4:4:4 36 M while decoding: the pixels are what the cap counts)
        for save in ({}, {"progressive": True}, {"progressive": True, "subsampling": 0}):
            status, text = post(web.port, encoded((4000, 3000), "JPEG", quality=80, **save))
            assert status == 503 and b'"triton":"down"' in text, (save, text)
    with web_app(max_frame_pixels=30_000_000) as web:
        assert post(web.port, bombs["jpeg"])[0] == 503


def hold_frame(port: int, source: str) -> socket.socket:
    """A frame whose body never finishes arriving: in flight until its socket closes."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"POST /api/frame HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nab")
    return sock


def test_a_client_has_at_most_two_frames_in_flight() -> None:
    """Each client's frames in flight had no bound but the rate (30 at once): with bombs, one
    client held Triton for everyone. A third frame from the address gets 429; others pass."""
    with web_app() as web:
        held = [hold_frame(web.port, "127.0.0.41") for _ in range(2)]
        try:
            deadline, status = time.monotonic() + 10, 0
            while status != 429 and time.monotonic() < deadline:
                status, text = post(web.port, b"x", "127.0.0.41")
            assert status == 429 and b"2 frames in flight already" in text, text
            assert post(web.port, b"x", "127.0.0.42")[0] == 415  # another address
        finally:
            for sock in held:
                sock.close()
        deadline, status = time.monotonic() + 10, 0
        while status != 415 and time.monotonic() < deadline:
            status, _ = post(web.port, b"x", "127.0.0.41")
        assert status == 415  # its frames ended with their connections


def test_x_forwarded_for_does_not_make_a_client_a_new_one() -> None:
    """uvicorn trusted ``X-Forwarded-For`` from loopback peers: a local client naming a new
    address per frame was never rate-limited. The client is the socket's peer."""
    with web_app(rate=0.1, burst=3, frame_interval_ms=10_000) as web:
        answers = [
            post(web.port, b"x", headers={"X-Forwarded-For": f"10.0.0.{i}"}) for i in range(7)
        ]
    codes = [status for status, _ in answers]
    assert codes == [415] * 3 + [429] * 4, codes
    assert b"too many frames from 127.0.0.1" in answers[-1][1]


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limits() -> None:
    """Behind a reverse proxy every user arrives from the proxy's address: without
    ``--trusted-proxies`` they would share one client's limits. With it, the header names the
    client, and only from that proxy."""
    with web_app(
        rate=0.1, burst=3, trusted_proxies=["127.0.0.1"], frame_interval_ms=10_000
    ) as web:
        forwarded = [
            post(web.port, b"x", headers={"X-Forwarded-For": f"10.0.0.{i}"})[0] for i in range(7)
        ]
        forged = [
            post(web.port, b"x", "127.0.0.2", {"X-Forwarded-For": f"10.0.1.{i}"})[0]
            for i in range(5)
        ]
    assert forwarded == [415] * 7, forwarded  # seven users, one frame each
    assert forged == [415] * 3 + [429] * 2, forged  # not a trusted proxy: one client


def test_a_trusted_proxy_is_not_held_to_one_clients_connections() -> None:
    """Behind a reverse proxy named in ``--trusted-proxies`` (as the docs ask) every user's
    connection comes from the proxy's address: past ``--client-connections`` of them the next
    were closed unread, whichever user they carried (the proxy answers 502). Another address
    is still held to the cap."""
    with web_app(trusted_proxies=["127.0.0.1"], client_connections=2) as web:
        opened = {source: [] for source in ("127.0.0.1", "127.0.0.2")}
        try:
            for source, socks in opened.items():
                for _ in range(4):
                    sock = socket.socket()
                    sock.bind((source, 0))
                    sock.connect(("127.0.0.1", web.port))
                    sock.settimeout(10)
                    socks.append(sock)
            time.sleep(0.3)  # every connection accepted (or closed) before any request
            answers = {}
            for source, socks in opened.items():
                answers[source] = []
                for i, sock in enumerate(socks):
                    request = "GET /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    request += f"X-Forwarded-For: 10.0.0.{i}\r\n\r\n"
                    try:
                        sock.sendall(request.encode())
                        answers[source].append(sock.recv(12))
                    except ConnectionError:
                        answers[source].append(b"")
        finally:
            for socks in opened.values():
                for sock in socks:
                    sock.close()
    assert answers["127.0.0.1"] == [b"HTTP/1.1 200"] * 4, answers  # four users via the proxy
    assert answers["127.0.0.2"] == [b"HTTP/1.1 200"] * 2 + [b""] * 2, answers


def test_a_host_header_naming_another_site_gets_400() -> None:
    """DNS rebinding: a site whose name comes to resolve to 127.0.0.1 sends its own name as
    ``Host`` and ``Origin``, so the same-origin check passed. Only this server's names (and
    ``--allowed-hosts``) are answered."""
    with web_app(allowed_hosts=["asl.example"]) as web:
        port = web.port
        rebound = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
        assert httpx.get(web.url + "/", headers={"Host": "attacker.example"}).status_code == 400
        refused = httpx.post(web.url + "/api/frame", content=photo("A").read_bytes(),
                             headers=rebound, timeout=30)  # fmt: skip
        assert refused.status_code == 400, refused.text
        for host in ("127.0.0.1", "localhost", "[::1]", "asl.example"):
            answer = httpx.get(web.url + "/api/config", headers={"Host": f"{host}:{port}"})
            assert answer.status_code == 200, (host, answer.text)


def test_one_address_cannot_hold_every_connection() -> None:
    """Sockets that never finish their headers, reconnected as each is closed, held every
    connection slot from one address (503 for all others). Past ``--client-connections`` an
    address's connections are closed at once, and another address is still answered."""
    with web_app(max_connections=6, client_connections=3) as web:
        hogs = []
        try:
            for _ in range(6):
                hog = socket.socket()
                hog.bind(("127.0.0.2", 0))
                hog.connect(("127.0.0.1", web.port))
                hog.sendall(b"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                hog.settimeout(3)
                hogs.append(hog)
            for hog in hogs[3:]:
                with contextlib.suppress(ConnectionResetError):
                    assert hog.recv(1) == b""  # before: socket.timeout, still open
            conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10,
                                              source_address=("127.0.0.3", 0))  # fmt: skip
            conn.request("GET", "/api/config")
            assert conn.getresponse().status == 200  # before: 503
            conn.close()
            hogs[0].settimeout(0.2)
            with pytest.raises(socket.timeout):
                hogs[0].recv(1)  # the first three are served as before (headers still due)
        finally:
            for hog in hogs:
                hog.close()


def test_a_truncated_photo_or_an_icon_bomb_gets_415_not_500(tmp_path) -> None:
    """The first 300 bytes of a real photo (Pillow: "Truncated File Read") and an ICO that
    says 16x16 but hides a 13,000 x 13,000 PNG: both are the client's bytes, 415 with the
    reason, read from the header alone; no Triton is needed to refuse them."""
    from asl_testkit.images import icon_bomb

    web = start_web()
    try:
        url = web.url + "/api/frame"
        cut = httpx.post(url, content=photo("A").read_bytes()[:300], timeout=30)
        assert cut.status_code == 415, cut.text
        assert cut.json()["error"].startswith(
            "not an image the model can read (truncated_or_corrupt): the image is truncated"
        ), cut.text
        icon = httpx.post(url, content=icon_bomb(tmp_path / "icon.ico").read_bytes(), timeout=30)
        assert icon.status_code == 415, icon.text
        # refused by format, unopened (before: decoded whole, then "decompression_bomb"); the
        # memory it costs is measured in a process of its own in tests/data/test_data_imageio.py
        assert "(unsupported_format): the image is in ICO format" in icon.json()["error"]
        assert httpx.get(web.url + "/api/config", timeout=30).status_code == 200
    finally:
        web.stop()


def _trickle(port: int, deadline_s: float) -> tuple[bytes, float]:
    """POST a 1,000-byte frame one byte every 0.3 s; the answer and when it came."""
    head = b"POST /api/frame HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
    started, answer, took = time.monotonic(), b"", None
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(head)
        client.settimeout(0.3)
        while time.monotonic() - started < deadline_s:
            try:
                if took is None:
                    client.sendall(b"x")
                chunk = client.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:  # closed: the whole answer is in
                break
            answer += chunk
            took = took or time.monotonic() - started  # its first bytes: stop sending
    return answer, took if took is not None else time.monotonic() - started


def test_a_frame_trickled_in_slower_than_the_request_timeout_gets_408() -> None:
    """A body sent a byte at a time had held its connection slot for as long as the client
    liked (the header deadline ends with the headers), so a few such clients took the page."""
    web = start_web(request_timeout=1.0, max_connections=2)
    try:
        answer, took = _trickle(web.port, deadline_s=15)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"the frame was not received within 1 s" in answer and took < 10
        assert httpx.get(f"{web.url}/api/config", timeout=5).status_code == 200  # slot freed
    finally:
        web.stop()

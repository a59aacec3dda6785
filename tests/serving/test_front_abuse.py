"""Clients that used to hold the public front (``python -m asl_recognition.serving.front``): a
body that made its JSON check quadratic, a client that never reads its answers, and pipelined
requests cut by the header deadline. Real processes on loopback: the front as its CLI, Triton's
HTTP API played by a small threaded server in the test; timeouts are made short by options.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from asl_testkit.cli import cli_process
from asl_testkit.servers import threaded_http

from asl_recognition.netutil import free_port
from asl_recognition.serving.front_checks import check_infer_json
from asl_recognition.serving.limits import MIB, Refused

BIG = 8 * MIB  # an answer larger than the kernel's socket buffers (4 MiB at most here)
SLOW = 1.5  # seconds Triton takes to say it is ready, longer than the header deadline below


class FakeTriton(BaseHTTPRequestHandler):
    """``{}`` at once, after ``SLOW`` s for readiness, ``BIG`` bytes for model big's config."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.endswith("/ready"):
            time.sleep(SLOW)
        self.answer(b"x" * BIG if self.path == "/v2/models/big/config" else b"{}")

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v2/models/slow/infer":  # a photo that holds the hand step
            time.sleep(SLOW)
        self.answer(b"{}")

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with threaded_http(FakeTriton) as url:
        yield url


@contextlib.contextmanager
def front(upstream: str, *options: str) -> Iterator[int]:
    """The front's CLI on a free port before ``upstream``; its port once it answers. The probe
    reads to the front's close, so it holds no connection slot when the test starts."""
    port = free_port()
    with cli_process("asl_recognition.serving.front", "--port", port, "--upstream", upstream,
                     *options) as proc:  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
                    probe.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    while probe.recv(4096):
                        pass
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.1)
        yield port


def get(port: int, path: str, source: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def test_brackets_in_strings_do_not_count_even_in_one_never_closed() -> None:
    """A parser stops at a string that is never closed, so brackets after it never nest."""
    deep = b"[" * 100
    for passes in (b'{"s": "' + deep + b'"}', b'{"s": "\\"' + deep + b'"}', b'"' + deep, b'"\\'):
        check_infer_json(passes)
    for refused in (deep, b'"a"' + deep, b'"\\\\"' + deep, b'"\n"' + deep):
        with pytest.raises(Refused, match="nests deeper"):
            check_infer_json(refused)


@pytest.mark.server
def test_a_body_of_escaped_quotes_does_not_stall_the_front(upstream) -> None:
    """A quote and 200 000 escaped quotes, never closed (400 KB): the old check took minutes,
    holding the GIL, and no one else was answered. Now: checked, forwarded and answered."""
    body = b'"' + b'\\"' * 200_000
    head = b"POST /v2/models/asl/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    with front(upstream) as port, socket.create_connection(("127.0.0.1", port)) as hostile:
        hostile.sendall(head % len(body) + body)
        time.sleep(0.5)  # the check is under way (before: for minutes)
        assert get(port, "/metrics", "127.0.0.31") == 200  # before: timed out
        hostile.settimeout(10)
        assert hostile.recv(4096).startswith(b"HTTP/1.1 200")


@pytest.mark.server
@pytest.mark.parametrize(
    "requests, timeouts",
    [(2, ("1", "30")), (1, ("60", "1"))],
    ids=["stalled-write-past-request-timeout", "header-deadline-with-answer-unsent"],
)
def test_a_client_that_never_reads_its_answers_loses_its_connection(
    upstream, requests: int, timeouts: tuple[str, str]
) -> None:
    """8 MiB answers, none read, held one of the two connection slots for ever (503 for
    everyone else): a second pipelined answer waited on the full write buffer, and the header
    deadline's close() waited for that buffer to empty. Now the connection is cut once writing
    has stalled for --request-timeout, or when the header deadline finds answers unsent."""
    request_timeout, header_timeout = timeouts
    options = ("--request-timeout", request_timeout, "--header-timeout", header_timeout)
    with front(upstream, "--max-connections", "2", *options) as port, socket.socket() as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(("127.0.0.1", port))
        hog.sendall(b"GET /v2/models/big/config HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
        hog.settimeout(10)
        assert hog.recv(12) == b"HTTP/1.1 200"  # served (it holds a slot), then not read
        deadline, status = time.monotonic() + 15, 0
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            status = get(port, "/metrics", "127.0.0.32")
        assert status == 200  # before: 503 until the hog went away
        received = 0
        with contextlib.suppress(ConnectionResetError):  # reset: the unsent bytes are dropped
            while chunk := hog.recv(1 << 20):
                received += len(chunk)
        assert received < requests * BIG, received  # cut, not drained (a timeout: still open)


@pytest.mark.server
def test_a_pipelined_request_is_not_cut_by_the_header_deadline(upstream) -> None:
    """The second request's headers were parsed while the first was answered; the deadline
    re-armed after that answer cut the connection while Triton (1.5 s) answered the second."""
    with front(upstream, "--header-timeout", "0.5") as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")  # fmt: skip
            data = b""
            while data.count(b"HTTP/1.1 200") < 2 and (chunk := sock.recv(4096)):
                data += chunk
    assert data.count(b"HTTP/1.1 200") == 2, data  # before: one, then the connection closed


@pytest.mark.server
def test_a_slow_client_that_keeps_reading_gets_its_whole_answer(upstream) -> None:
    """The write deadline is for a client that stopped reading: one reading 8 MiB slowly,
    past both deadlines (1 s), had been reset after its first megabytes."""
    options = ("--request-timeout", "1", "--header-timeout", "1")
    with front(upstream, *options) as port, socket.socket() as reader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        reader.connect(("127.0.0.1", port))
        reader.sendall(b"GET /v2/models/big/config HTTP/1.1\r\nHost: x\r\n\r\n")
        reader.settimeout(10)
        received = b""
        while len(received) < BIG and (chunk := reader.recv(256 * 1024)):
            received += chunk
            time.sleep(0.02)  # a few MiB/s
        head, _, body = received.partition(b"\r\n\r\n")
        while len(body) < BIG and (chunk := reader.recv(1 << 20)):
            body += chunk
    assert head.startswith(b"HTTP/1.1 200") and len(body) == BIG


@pytest.mark.server
def test_x_forwarded_for_does_not_make_a_client_a_new_one(upstream) -> None:
    """uvicorn trusted ``X-Forwarded-For`` from loopback peers: a local client naming a new
    address per request was never rate-limited. The client is the socket's peer."""
    statuses = []
    with front(upstream, "--rate", "0.1", "--burst", "3") as port:
        for i in range(6):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/v2/health/live", headers={"X-Forwarded-For": f"10.0.0.{i}"})
            answer = conn.getresponse()
            statuses.append((answer.status, answer.read()))
            conn.close()
    assert [status for status, _ in statuses] == [200] * 3 + [429] * 3, statuses
    assert b"too many requests from 127.0.0.1" in statuses[-1][1]


def test_one_client_may_have_only_so_many_requests_in_flight(upstream) -> None:
    """A photo may hold the hand step for seconds, and the rate alone let one client queue
    minutes of work ahead of everyone. One more than ``--requests-in-flight`` gets 429 at once;
    another address is still served, and so is the first once an answer is back."""
    from concurrent.futures import ThreadPoolExecutor

    def infer(source: str, model: str = "slow") -> tuple[int, bytes, float]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=30, source_address=(source, 0)
        )
        start = time.monotonic()
        try:
            conn.request("POST", f"/v2/models/{model}/infer", body=b"{}")
            answer = conn.getresponse()
            return answer.status, answer.read(), time.monotonic() - start
        finally:
            conn.close()

    with front(upstream, "--requests-in-flight", "2") as port:
        with ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(infer, "127.0.0.30") for _ in range(2)]
            time.sleep(SLOW / 3)  # both are with Triton now
            status, answer, seconds = infer("127.0.0.30", "fast")
            assert status == 429 and seconds < SLOW / 3, (status, answer, seconds)
            assert b"has 2 requests in flight already" in answer
            assert infer("127.0.0.31", "fast")[0] == 200  # another client
            assert [f.result()[0] for f in slow] == [200, 200]
        assert infer("127.0.0.30", "fast")[0] == 200

"""Status page under slow, hostile or broken sources: a trickling, slow, huge or malformed fake
Prometheus, an unreachable ClearML server, odd registry records, a flood of dropped requests.

Each section must degrade on its own, no request may wait on a source, and the rest of the web
app (live page, frames, health) must keep answering.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from asl_testkit.web import start_web

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.monitoring.dashboard import StatusSource
from asl_recognition.monitoring.prometheus_api import MAX_BODY, MalformedAnswer, PromClient
from asl_recognition.netutil import free_port
from asl_recognition.paths import REPO_ROOT

GOOD = {"status": "success", "data": {"resultType": "vector", "result": []}}


class FakePrometheus:
    """A **fake** Prometheus on loopback: ``mode`` picks how it answers every GET.

    ``trickle``: a byte every 0.5 s, forever; ``slow``: a good answer after 1 s; ``huge`` /
    ``huge-stream``: 6 MiB of valid JSON, with / without ``Content-Length``; ``body``: ``body``
    for the queries, a good empty answer for ``/api/v1/alerts`` (``alerts`` body for those)."""

    def __init__(self, mode: str, body: bytes = b"", alerts: bytes | None = None) -> None:
        self.mode, self.body, self.alerts, self.requests = mode, body, alerts, 0
        self.delay = 1.0  # of each "slow" answer
        self.stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                fake.requests += 1
                try:
                    fake.answer(self)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        body = json.dumps(GOOD).encode()
        if self.mode == "body":
            is_alerts = request.path.startswith("/api/v1/alerts")
            default = json.dumps({"status": "success", "data": {"alerts": []}}).encode()
            body = (self.alerts or default) if is_alerts else self.body
        elif self.mode == "slow":
            self.stop.wait(self.delay)
            if request.path.startswith("/api/v1/alerts"):
                body = json.dumps({"status": "success", "data": {"alerts": []}}).encode()
        elif self.mode.startswith("huge"):
            body = json.dumps({**GOOD, "pad": "x" * (6 * 1024 * 1024)}).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        if self.mode == "trickle":
            request.send_header("Content-Length", "100000")
            request.end_headers()
            while not self.stop.wait(0.5):
                request.wfile.write(b" ")
                request.wfile.flush()
            return
        if self.mode == "huge-stream":
            request.send_header("Connection", "close")
            request.close_connection = True
        else:
            request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def _probe(port: int, path: str, source: str = "127.0.0.2", timeout: float = 30):
    """(status, body, seconds) of one GET from ``source``, another client than the flood's."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    start = time.monotonic()
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        return resp.status, resp.read(), time.monotonic() - start
    finally:
        conn.close()


def _flood(port: int, count: int, hold: float = 0.2) -> None:
    """``count`` GET /status from 127.0.0.1, at most 4 open at once, each closed unread."""
    open_socks: list[socket.socket] = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.1", 0))
        sock.sendall(f"GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        open_socks.append(sock)
        if len(open_socks) >= 4:
            time.sleep(hold)
            for s in open_socks:
                s.close()
            open_socks = []
    for s in open_socks:
        s.close()


def _register(ws: Path, promote: bool = True):
    from asl_recognition.registry import get_registry
    from asl_recognition.registry.base import NewModel

    files = ws / "files"
    files.mkdir(exist_ok=True)
    (files / "model.onnx").write_bytes(b"not opened by the status page")
    write_class_file(files / "classes.txt", list(CLASSES))
    registry = get_registry("local")
    model = NewModel(
        "asl", str(files / "model.onnx"), str(files / "classes.txt"), {"val_accuracy": 0.9}, {}
    )
    record = registry.register(model)
    return registry.promote(record.id) if promote else record


def _record_file(ws: Path, model_id: str) -> Path:
    return ws / "registry" / "records" / f"{model_id}.json"


def test_a_flood_of_dropped_status_requests_before_a_trickling_prometheus_blocks_nothing(
    asl_workspace: Path,
) -> None:
    """40 GET /status closed after 0.2 s, Prometheus trickling: before, each held a thread
    forever and the app answered 503 to everyone else; now one refresh serves them all."""
    fake = FakePrometheus("trickle")
    web = start_web(status=StatusSource(prometheus=fake.url, registry_backend="local"))
    try:
        _flood(web.port, 40)
        code, body, _ = _probe(web.port, "/")
        assert code == 200 and b'id="spelled"' in body, (code, body[:100])
        code, body, _ = _probe(web.port, "/api/health")  # the app's own answer, not uvicorn's
        assert json.loads(body)["triton"] == "down", (code, body[:100])
        code, body, took = _probe(web.port, "/api/status")
        assert code == 200 and took < 8, (code, took)  # the first refresh's 5 s deadline
        assert "Prometheus unreachable" in json.loads(body)["live"]["error"]
        code, body, took = _probe(web.port, "/status")
        assert code == 200 and took < 2.5 and b"Prometheus unreachable" in body, (code, took)
        assert fake.requests <= 3, f"{fake.requests} queries: not one refresh for all requests"
    finally:
        fake.close()
        web.stop()


def test_slow_prometheus_answers_share_one_deadline_and_the_snapshot_is_reused(
    asl_workspace: Path,
) -> None:
    """16 queries answered after 1 s each took 16 s per request; now 5 s for the refresh."""
    fake = FakePrometheus("slow")
    web = start_web(status=StatusSource(prometheus=fake.url, registry_backend="local"))
    try:
        code, body, took = _probe(web.port, "/api/status", timeout=60)
        assert code == 200 and took < 8, (code, took)
        assert "Prometheus unreachable" in json.loads(body)["live"]["error"]
        queries = fake.requests
        code, _, took = _probe(web.port, "/status", timeout=60)
        assert code == 200 and took < 1.0, (code, took)
        assert fake.requests <= queries + 1, "the snapshot was not reused"
    finally:
        fake.close()
        web.stop()


def test_a_slow_but_working_prometheus_shows_its_last_answer_not_an_outage(
    asl_workspace: Path,
) -> None:
    """16 queries of 0.1 s never fit a 1 s refresh: each read ended late, was thrown away, and
    the page said "unreachable" for ever. The last answer is shown, marked late."""
    fake = FakePrometheus("slow")
    fake.delay = 0.1
    source = StatusSource(prometheus=fake.url, registry_backend="local", refresh=1.0)
    try:
        assert "Prometheus unreachable" in source.collect()["live"]["error"]
        time.sleep(2)  # the late read ends, within its own deadline
        status = source.collect()
        assert status["live"]["error"] is None and status["late_s"] >= 0, status["live"]
    finally:
        fake.close()


def test_a_read_stuck_in_a_trickle_is_left_behind_once_prometheus_recovers(
    asl_workspace: Path,
) -> None:
    """The stuck read had been handed back to every refresh: "unreachable" until the trickling
    connection ended (hours), though Prometheus answered again."""
    fake = FakePrometheus("trickle")
    source = StatusSource(prometheus=fake.url, registry_backend="local", refresh=0.5)
    try:
        assert "Prometheus unreachable" in source.collect()["live"]["error"]
        fake.mode, fake.body = "body", json.dumps(GOOD).encode()  # answers again; the first
        # connection still trickles
        time.sleep(2.5)  # past the stuck read's own deadline (four refreshes)
        assert source.collect()["live"]["error"] is None
    finally:
        fake.close()


def test_a_snapshot_from_before_a_quiet_spell_is_not_served_as_current(
    asl_workspace: Path,
) -> None:
    """After minutes without a request, the first one waited 1 s and got the old snapshot (the
    figures from before the alerts fired): it now waits for the refresh."""
    import asyncio
    import dataclasses

    from asl_recognition.monitoring.dashboard import StatusCache

    fake = FakePrometheus("slow")
    fake.delay = 0.1  # 16 queries: about 1.6 s, over the 1 s a fresh-enough page waits
    cache = StatusCache(StatusSource(prometheus=fake.url, registry_backend="local"))
    try:
        first = asyncio.run(cache.current())
        cache._snapshot = dataclasses.replace(first, taken=first.taken - 60)
        assert asyncio.run(cache.current()).taken > first.taken
    finally:
        fake.close()


def test_a_refresh_thread_that_fails_to_start_does_not_stop_refreshes(
    asl_workspace: Path, monkeypatch
) -> None:
    from asl_recognition.monitoring import dashboard

    real = threading.Thread

    class NoThread(real):  # the interpreter out of threads, once
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    cache = dashboard.StatusCache(StatusSource(prometheus="http://127.0.0.1:9", refresh=1.0))
    monkeypatch.setattr(dashboard.threading, "Thread", NoThread)
    with pytest.raises(RuntimeError):
        cache._due()
    monkeypatch.setattr(dashboard.threading, "Thread", real)
    done = cache._due()
    assert done is not None and done.wait(15)  # a refresh ran (it had waited for ever)


@pytest.mark.parametrize("mode", ["huge", "huge-stream"])
def test_a_prometheus_answer_over_the_cap_is_refused_not_read(mode: str) -> None:
    fake = FakePrometheus(mode)
    try:
        with pytest.raises(MalformedAnswer, match=f"over {MAX_BODY}"):
            PromClient(fake.url).scalar("up")
    finally:
        fake.close()


MALFORMED = {
    "list": (b"[]", None),
    "data null": (b'{"status":"success","data":null}', None),
    "result null": (b'{"status":"success","data":{"result":null}}', None),
    "metric null": (
        b'{"status":"success","data":{"result":[{"metric":null,"value":[0,"1"]}]}}',
        None,
    ),
    "odd alerts": (
        json.dumps(GOOD).encode(),
        b'{"status":"success","data":{"alerts":[{"state":"firing","labels":"x"},7]}}',
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_prometheus_answer_degrades_the_live_section_only(
    asl_workspace: Path, name: str
) -> None:
    """Each of these answers had made /status a 500 and lost the model card."""
    _register(asl_workspace)
    body, alerts = MALFORMED[name]
    fake = FakePrometheus("body", body, alerts)
    web = start_web(status=StatusSource(prometheus=fake.url, registry_backend="local"))
    try:
        code, page, _ = _probe(web.port, "/status")
        assert code == 200 and b'id="model"' in page and b"asl v1" in page, (code, page[:200])
        code, body, _ = _probe(web.port, "/api/status")
        assert code == 200 and json.loads(body)["model"]["version"] == 1
    finally:
        fake.close()
        web.stop()


@pytest.mark.parametrize("metrics", ["abc", 7])
def test_a_production_record_with_odd_metrics_is_named_on_the_page(
    asl_workspace: Path, metrics: object
) -> None:
    """Such a record had made the whole page 500. The registry now refuses it in one line for
    every reader (select_best and the build included), and the page shows that line."""
    record = _register(asl_workspace)
    path = _record_file(asl_workspace, record.id)
    path.write_text(json.dumps({**json.loads(path.read_text()), "metrics": metrics}))
    prom = f"http://127.0.0.1:{free_port()}"
    web = start_web(status=StatusSource(prometheus=prom, registry_backend="local"))
    try:
        code, page, _ = _probe(web.port, "/status")
        said = f"its metrics is {type(metrics).__name__}, not dict".encode()
        assert code == 200 and b"is not a readable record" in page and said in page, page[-800:]
    finally:
        web.stop()


def test_a_truncated_record_beside_production_does_not_hide_it(asl_workspace: Path) -> None:
    """``list`` reads every record: one truncated non-production record had made the page say
    "registry error: ModelIntegrityError" instead of showing the production model."""
    other = _register(asl_workspace, promote=False)
    _register(asl_workspace)  # v2, production
    path = _record_file(asl_workspace, other.id)
    path.write_text(path.read_text()[:40])
    prom = f"http://127.0.0.1:{free_port()}"
    web = start_web(status=StatusSource(prometheus=prom, registry_backend="local"))
    try:
        code, page, _ = _probe(web.port, "/status")
        assert code == 200 and b"asl v2" in page, page[:300]
        assert b'id="model-note"' in page and path.name.encode() in page  # said on the page too
        status = json.loads(_probe(web.port, "/api/status")[1])
        assert status["model"]["version"] == 2 and path.name in status["model_error"]
    finally:
        web.stop()


def test_an_unreachable_clearml_server_never_blocks_the_page_nor_shutdown(
    tmp_path: Path, asl_workspace: Path
) -> None:
    """``--registry-backend auto`` with a configured ClearML server that does not answer: the
    SDK retries 240 times (``api.http.retries`` in clearml/backend_api/config/default/api.conf;
    no environment variable bounds it), so the read had held /status for 580 s and more."""
    port, dead = free_port(), f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("ASL_OFFLINE", "CLEARML_OFFLINE_MODE")}
    env.update(
        HOME=str(tmp_path), PYTHONPATH=str(REPO_ROOT), CLEARML_API_HOST=dead,
        CLEARML_WEB_HOST=dead, CLEARML_FILES_HOST=dead,
        CLEARML_API_ACCESS_KEY="DUMMYACCESSKEY", CLEARML_API_SECRET_KEY="dummy-secret",
    )  # fmt: skip
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "asl_recognition.monitoring.dashboard", "--port", str(port),
         "--registry-backend", "auto", "--prometheus", f"http://127.0.0.1:{free_port()}",
         "--triton", f"127.0.0.1:{free_port()}"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _probe(port, "/", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "dashboard did not start"
                time.sleep(0.3)
        code, page, took = _probe(port, "/status", timeout=30)
        assert code == 200 and took < 10 and b"registry unreachable" in page, (code, took)
        waited, deadline = 0, time.monotonic() + 30
        while waited < 9:  # later refreshes wait on the same read: they start no second one
            assert time.monotonic() < deadline, f"the read was started again after {waited} s"
            time.sleep(1)
            status = json.loads(_probe(port, "/api/status", timeout=30)[1])
            assert status["model"] is None and "registry unreachable" in status["model_error"]
            waited = int(status["model_error"].split("no answer in ")[1].split(" s")[0])
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)  # a read stuck in the SDK does not hold the exit
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_prometheus_credentials_are_not_sent_where_a_redirect_points(asl_workspace: Path) -> None:
    """urllib sent the basic-auth header on to any host a redirect named: a Prometheus (or a
    proxy before it) answering 302 to another address was sent the password. The redirect is
    followed without it; the status page reads the other address's answer as any other."""
    seen: list[tuple[str, str | None]] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            seen.append((self.path, self.headers.get("Authorization")))
            body = json.dumps(GOOD).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    target = f"http://localhost:{elsewhere.server_address[1]}"  # another host, another port

    class Redirecting(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            self.send_response(302)
            self.send_header("Location", target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    prometheus = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=prometheus.serve_forever, daemon=True).start()
    url = f"http://admin:s3cret@127.0.0.1:{prometheus.server_address[1]}"
    web = start_web(status=StatusSource(url, registry_backend="local", refresh=2.0))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
        conn.request("GET", "/api/status")
        answer = conn.getresponse()
        status = json.loads(answer.read())
        assert answer.status == 200 and status["prometheus"].startswith("http://***@"), status
        assert seen and all(path.startswith("/api/v1/") for path, _ in seen), seen
        assert [auth for _, auth in seen if auth] == [], "the password went to the redirect"
        assert "s3cret" not in json.dumps(status)
    finally:
        web.stop()
        for server in (prometheus, elsewhere):
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize(
    "old, new, kept",
    [
        ("http://prom.example/api/v1/query", "https://prom.example/api/v1/query", True),
        ("http://prom.example:80/api", "http://prom.example/api/", True),
        ("https://prom.example/api", "https://prom.example:443/x", True),
        ("http://prom.example:9090/api", "https://prom.example/api", False),
        ("https://prom.example/api", "http://prom.example/api", False),
        ("http://prom.example/api", "https://elsewhere.example/api", False),
    ],
)
def test_a_redirect_keeps_prometheus_credentials_where_requests_and_httpx_do(
    old: str, new: str, kept: bool
) -> None:
    """A Prometheus on http:// behind a proxy that upgrades to https on the same host got the
    header before the redirect fix, as it does with requests and httpx; the fix dropped it
    (401 on the page). Another host, port or a downgrade still goes without it."""
    import io
    import urllib.request
    from email.message import Message

    from asl_recognition.monitoring.prometheus_api import _CredentialsStayHome

    request = urllib.request.Request(old)
    request.add_header("Authorization", "Basic YWRtaW46czNjcmV0")
    followed = _CredentialsStayHome().redirect_request(
        request, io.BytesIO(), 302, "Found", Message(), new
    )
    assert followed.has_header("Authorization") is kept

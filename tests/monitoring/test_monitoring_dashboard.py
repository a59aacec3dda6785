"""Status page: registry model card, confusion matrix lookup, degraded states, Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from asl_testkit.servers import LoopbackServer
from asl_testkit.web import start_web

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.monitoring.alert_rules import alert_rules
from asl_recognition.monitoring.dashboard import StatusSource
from asl_recognition.monitoring.settings import load_thresholds
from asl_recognition.monitoring.status_page import model_summary, render_page
from asl_recognition.monitoring.tools import find_tool
from asl_recognition.paths import REPO_ROOT
from asl_recognition.registry.confusion import find_confusion

ARTIFACTS = REPO_ROOT / "test-artifacts"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _register(ws: Path, metrics: dict, run_dir: Path | None = None):
    from asl_recognition.registry import get_registry
    from asl_recognition.registry.base import NewModel

    files = ws / "files"
    files.mkdir(exist_ok=True)
    onnx = files / "model.onnx"
    onnx.write_bytes(b"not opened by the status page")
    classes = files / "classes.txt"
    write_class_file(classes, list(CLASSES))
    registry = get_registry("local")
    params = {"run_dir": str(run_dir)} if run_dir else {}
    record = registry.register(NewModel("asl", str(onnx), str(classes), metrics, params))
    return registry.promote(record.id)


def test_confusion_matrix_found_in_metrics_run_dir_or_png(asl_workspace: Path) -> None:
    cm = [[3, 1], [0, 4]]
    rec = _register(asl_workspace, {"val_accuracy": 0.9, "confusion_matrices": {"test": cm}})
    assert find_confusion(rec)["matrix"] == [[3.0, 1.0], [0.0, 4.0]]
    assert find_confusion(rec)["split"] == "test"
    run = asl_workspace / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"val_confusion_matrix": cm}))
    rec = _register(asl_workspace, {"val_accuracy": 0.9}, run_dir=run)
    found = find_confusion(rec)
    assert found["split"] == "val" and found["matrix"][1][1] == 4.0
    (run / "metrics.json").unlink()
    shutil.copy(REPO_ROOT / "data" / "test_images" / "A_test.jpg", run / "test_confusion.png")
    assert find_confusion(rec)["png"] == run / "test_confusion.png"


def test_page_shows_model_card_and_escapes_text(asl_workspace: Path) -> None:
    rec = _register(
        asl_workspace,
        {"external_accuracy": 0.41, "val_macro_f1": 0.93, "val_accuracy": 0.95, "note": "<b>"},
    )
    summary = model_summary(rec)
    assert list(summary["metrics"]) == ["val_accuracy", "val_macro_f1", "external_accuracy"]
    status = {
        "model": {**summary, "classes": ["A", "<script>x</script>"]},
        "model_error": None,
        "confusion": {"matrix": None, "png": None},
        "live": {"error": "Prometheus unreachable at http://127.0.0.1:1 (<refused>)"},
        "window": "5m",
        "prometheus": "http://127.0.0.1:1",
    }
    page = render_page(status)
    assert "asl v1" in page and "0.9500" in page and "external_accuracy" in page
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert "No confusion matrix stored" in page and "&lt;refused&gt;" in page


def test_empty_state_in_headless_chromium(asl_workspace: Path, tmp_path: Path) -> None:
    """No production model and no Prometheus: the page says so instead of failing."""
    browser = find_tool("chromium")
    if not browser:
        pytest.skip("chromium missing: run scripts/install_system_deps.sh")
    prom = f"http://127.0.0.1:{_closed_port()}"
    web = start_web(status=StatusSource(prometheus=prom))
    url = web.url + "/"
    try:
        with urllib.request.urlopen(url + "status/healthz", timeout=5) as resp:
            assert resp.read() == b"ok\n"
        with urllib.request.urlopen(url + "api/status", timeout=10) as resp:
            status = json.load(resp)
        assert status["model"] is None and "unreachable" in status["live"]["error"]
        shot = ARTIFACTS / "status-page-empty.png"
        shot.parent.mkdir(exist_ok=True)
        common = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
        ]  # fmt: skip
        res = subprocess.run(
            [*common, "--dump-dom", url + "status"], capture_output=True, text=True, timeout=90
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert 'id="no-model"' in res.stdout and "No production model yet" in res.stdout
        assert f"Prometheus unreachable at {prom}" in res.stdout
        res = subprocess.run(
            [*common, f"--screenshot={shot}", "--window-size=1200,600", url + "status"],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert shot.is_file() and shot.stat().st_size > 5000, res.stderr[-2000:]
    finally:
        web.stop()


def test_dashboard_cli_serves_both_pages_on_one_server_until_interrupted(
    asl_workspace: Path,
) -> None:
    """``make dashboard`` without Triton or Prometheus: one process, one port, the status page
    on /status (its sections degraded) and the live page on / saying Triton is down."""
    port = _closed_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "asl_recognition.monitoring.dashboard", "--port", str(port),
         "--prometheus", f"http://127.0.0.1:{_closed_port()}",
         "--triton", f"127.0.0.1:{_closed_port()}"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # generous: CI machines can be very busy
        while time.monotonic() < deadline:
            try:
                code, page = _get(base + "/status")
                break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("dashboard did not answer")
        assert code == 200 and "No production model yet" in page and "unreachable" in page
        code, live = _get(base + "/")
        assert code == 200 and 'id="spelled"' in live, "the live page is not on the same server"
        code, health = _get(base + "/healthz")
        assert code == 503 and json.loads(health)["triton"] == "down"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
            pytest.fail(f"dashboard ignored Ctrl-C for 60 s; its output:\n{output[-3000:]}")
    assert proc.returncode == 0


def _get(url: str, timeout: float = 10) -> tuple[int, str]:
    """(status, body) for GET; HTTP errors are answers too, a dropped connection raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _serve(source: StatusSource):
    """(web app, its base URL ending in /): the status page's routes on the web app."""
    web = start_web(status=source)
    return web, web.url + "/"


def test_nan_in_confusion_matrix_renders_as_gap_and_health_stays_honest(
    asl_workspace: Path,
) -> None:
    """A NaN cell (a split with no samples, a bad file) used to drop the connection on ``/``."""
    run = asl_workspace / "run"
    run.mkdir()
    matrix = [[3, float("nan")], [0, 4]]
    (run / "metrics.json").write_text(json.dumps({"val_confusion_matrix": matrix}))
    _register(asl_workspace, {"val_accuracy": 0.9}, run_dir=run)
    source = StatusSource(
        prometheus=f"http://127.0.0.1:{_closed_port()}", registry_backend="local"
    )
    server, url = _serve(source)
    try:
        code, page = _get(url + "status")
        assert code == 200 and "Confusion matrix (val split)" in page
        assert ">n/a</td>" in page and "1 cell(s) not a number" in page and ">4</td>" in page
        assert _get(url + "status/healthz") == (200, "ok\n")
        code, body = _get(url + "api/status")

        def reject(constant: str) -> None:
            raise AssertionError(f"/api/status is not strict JSON: {constant}")

        status = json.loads(body, parse_constant=reject)
        assert status["confusion"]["matrix"] == [[3.0, None], [0.0, 4.0]]
    finally:
        server.stop()


class FailingSourceMock(StatusSource):
    """Mock: a data source whose collection raises, as a bug in any section would."""

    def collect(self) -> dict:
        raise RuntimeError("registry record is corrupt")


def test_healthz_reports_a_page_that_cannot_render() -> None:
    server, url = _serve(FailingSourceMock())
    try:
        code, body = _get(url + "status/healthz")
        assert code == 503 and "registry record is corrupt" in body
        code, body = _get(url + "status")  # an error answer, not a dropped connection
        assert code == 500 and body.count("\n") == 1 and "RuntimeError" in body
    finally:
        server.stop()


class PrometheusStub:
    """Stub of Prometheus's HTTP API behind basic auth: answers ``up`` with 1, the rest empty."""

    def __init__(self, user: str, password: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.queries: list[str] = []
        self.auth: list[str | None] = []
        self.server = LoopbackServer(self.respond)
        self.port = self.server.port

    def respond(self, request: BaseHTTPRequestHandler) -> tuple[int, str, bytes]:
        url = urllib.parse.urlparse(request.path)
        self.auth.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != self.expected:
            return 401, "text/plain", b"unauthorised"
        query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
        self.queries.append(query)
        if url.path == "/api/v1/alerts":
            data: dict = {"alerts": []}
        elif url.path == "/api/v1/query" and query.startswith("max(up{"):
            data = {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]}
        else:
            data = {"resultType": "vector", "result": []}
        body = json.dumps({"status": "success", "data": data}).encode()
        return 200, "application/json", body

    def close(self) -> None:
        self.server.close()


def test_prometheus_password_is_used_but_never_shown(asl_workspace: Path) -> None:
    """userinfo goes into the Authorization header; page, JSON and startup line mask it."""
    secret = "s3cret-prom-pw"
    stub = PrometheusStub("ops", secret)
    port = _closed_port()
    env = {**os.environ, "ASL_ALERT_TRITON_JOB": "asl-triton", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "asl_recognition.monitoring.dashboard", "--port", str(port),
         "--registry-backend", "local",
         "--prometheus", f"http://ops:{secret}@127.0.0.1:{stub.port}"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        startup = proc.stdout.readline()
        assert "status page on" in startup and secret not in startup, startup
        assert f"***@127.0.0.1:{stub.port}" in startup and "job asl-triton" in startup
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                code, page = _get(url + "status")
                break
            except OSError:
                assert time.monotonic() < deadline, "dashboard did not answer"
                time.sleep(0.3)
        code, status = _get(url + "api/status")
        assert code == 200 and secret not in page and secret not in status
        assert f"Prometheus http://***@127.0.0.1:{stub.port}" in page
        assert "unreachable" not in page and ">up</div>" in page, page
        assert set(stub.auth) == {stub.expected}, "credentials not sent (or sent wrong)"
        # the configured job, not a hard-coded one, and the expressions of the alert rules
        assert 'max(up{job="asl-triton"})' in stub.queries
        assert not any('job="triton"' in q for q in stub.queries)
        rules = alert_rules(load_thresholds(overrides={"triton_job": "asl-triton"}, env={}))
        error_alert = next(r for r in rules["rules"] if r["alert"] == "AslHighErrorRate")
        page_error_ratio = next(
            q for q in stub.queries if q.startswith("(sum(rate(nv_inference_request_f")
        )
        assert error_alert["expr"].startswith(page_error_ratio + " > ")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            stub.close()


def test_the_page_carries_its_stylesheet_from_the_template_folder() -> None:
    """The CSS lives in templates/status.css (package data), included verbatim in the page."""
    import importlib.resources

    css = (
        importlib.resources.files("asl_recognition.monitoring") / "templates" / "status.css"
    ).read_text(encoding="utf-8")
    status = {
        "model": None,
        "model_error": "no production model",
        "confusion": {"matrix": None, "png": None},
        "live": {"error": "Prometheus unreachable"},
        "window": "5m",
        "prometheus": "http://127.0.0.1:9090",
    }
    page = render_page(status)
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert ".tiles{display:grid" in css and style.strip() == css.strip()


def test_status_page_on_the_web_app_links_its_confusion_image_and_allows_its_styles(
    asl_workspace: Path,
) -> None:
    """The page's image lives under /status on the shared app, and the status page's own CSP
    lets its inline stylesheet apply (the live page's CSP would leave it unstyled)."""
    run = asl_workspace / "run"
    run.mkdir()
    shutil.copy(REPO_ROOT / "data" / "test_images" / "A_test.jpg", run / "test_confusion.png")
    _register(asl_workspace, {"val_accuracy": 0.9}, run_dir=run)
    prom = f"http://127.0.0.1:{_closed_port()}"
    web, url = _serve(StatusSource(prometheus=prom, registry_backend="local"))
    try:
        with urllib.request.urlopen(url + "status", timeout=10) as resp:
            page, csp = resp.read().decode(), resp.headers["content-security-policy"]
        assert '<img src="/status/confusion.png"' in page and "<style>" in page
        assert "style-src 'unsafe-inline'" in csp and "script-src" not in csp
        with urllib.request.urlopen(url + "status/confusion.png", timeout=10) as resp:
            assert resp.headers["content-type"] == "image/png"
            assert resp.read() == (run / "test_confusion.png").read_bytes()
        with urllib.request.urlopen(url, timeout=10) as resp:  # the live page keeps its own
            assert "'unsafe-inline'" not in resp.headers["content-security-policy"]
    finally:
        web.stop()

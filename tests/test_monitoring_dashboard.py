"""Status page: registry model card, confusion matrix lookup, degraded states, Chromium."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.monitoring.dashboard import (
    StatusSource,
    find_confusion,
    make_server,
    model_summary,
    render_page,
)
from asl_recognition.monitoring.tools import find_tool
from asl_recognition.paths import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _register(ws: Path, metrics: dict, run_dir: Path | None = None):
    from asl_recognition.registry import get_registry

    files = ws / "files"
    files.mkdir(exist_ok=True)
    onnx = files / "model.onnx"
    onnx.write_bytes(b"not opened by the status page")
    classes = files / "classes.txt"
    write_class_file(classes, list(CLASSES))
    registry = get_registry("local")
    params = {"run_dir": str(run_dir)} if run_dir else {}
    record = registry.register("asl", str(onnx), str(classes), metrics, params)
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
    server = make_server(StatusSource(prometheus=prom), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with urllib.request.urlopen(url + "healthz", timeout=5) as resp:
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
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=90
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert 'id="no-model"' in res.stdout and "No production model yet" in res.stdout
        assert f"Prometheus unreachable at {prom}" in res.stdout
        res = subprocess.run(
            [*common, f"--screenshot={shot}", "--window-size=1200,600", url],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert shot.is_file() and shot.stat().st_size > 5000, res.stderr[-2000:]
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_cli_serves_until_interrupted(asl_workspace: Path) -> None:
    port = _closed_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "asl_recognition.monitoring.dashboard", "--port", str(port),
         "--prometheus", f"http://127.0.0.1:{_closed_port()}"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # generous: CI machines can be very busy
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    assert "No production model yet" in resp.read().decode()
                break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("dashboard did not answer")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
            pytest.fail(f"dashboard ignored Ctrl-C for 60 s; its output:\n{output[-3000:]}")
    assert proc.returncode == 0

"""`python -m asl_recognition.serving.launcher` (what `make serve` runs): ready, then SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from asl_recognition.paths import REPO_ROOT
from asl_recognition.serving.repository import build_repository

pytestmark = pytest.mark.server


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def test_cli_serves_until_sigterm_then_stops_cleanly(tiny_models, tmp_path) -> None:
    from asl_testkit import free_port

    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "asl_recognition.serving.launcher",
        "--repo",
        str(tmp_path / "repo"),
    ]
    cmd += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    cmd += ["--log-path", str(tmp_path / "triton.log"), "--exit-timeout", "3"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()  # printed once the server is ready
        assert line.startswith("tritonserver ready"), line + proc.stderr.read()
        assert _ready(http)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _ready(http):
        time.sleep(0.2)
    assert not _ready(http)
    assert "successfully unloaded 'asl_onnx'" in (tmp_path / "triton.log").read_text()


def test_cli_reports_a_missing_repository(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asl_recognition.serving.launcher", "--repo", str(tmp_path / "no")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().startswith("error: model repository")
        and "Traceback" not in proc.stderr
    )

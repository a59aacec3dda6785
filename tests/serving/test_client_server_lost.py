"""client.py when the real tritonserver is killed mid-run of ``--dir``: over HTTP and gRPC it
prints the answers it already had, then one line for the rest (exit code 3), never a traceback.

The model takes one image per request (max_batch_size 1), so a run of a few hundred photos is a
few hundred requests; the server is killed (SIGKILL) once its metrics count five answers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from asl_testkit.servers import start_server
from test_serving_server import CLIENT, real_images

from asl_recognition.serving.repository import build_repository

pytestmark = pytest.mark.server
COPIES = 15


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real test photos, each copied ``COPIES`` times: one request each."""
    folder = tmp_path_factory.mktemp("photos")
    for copy in range(COPIES):
        for photo in real_images():
            shutil.copyfile(photo, folder / f"{copy:02d}_{photo.name}")
    return folder


def answered(server) -> int:
    """Successful requests of the ensemble ``asl`` so far (0 before the first)."""
    try:
        text = urllib.request.urlopen(server.metrics_url, timeout=2).read().decode()
    except OSError:
        return 0
    found = re.search(
        r'^nv_inference_request_success\{model="asl",version="1"\} (\S+)$', text, re.M
    )
    return int(float(found.group(1))) if found else 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_killed_mid_run_keeps_the_answers_and_says_one_line(
    tiny_models, photo_dir, tmp_path, protocol
) -> None:
    model = tiny_models["a"]
    build_repository(model.onnx, model.classes, tmp_path / "repo", max_batch_size=1)
    server = start_server(tmp_path / "repo", tmp_path, poll_secs=1, exit_timeout_secs=3)
    url = server.http_url if protocol == "http" else server.grpc_url
    total = len(list(photo_dir.iterdir()))
    try:
        client = subprocess.Popen(
            [sys.executable, "-I", str(CLIENT), "--dir", str(photo_dir), "--url", url]
            + ["--protocol", protocol],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        deadline = time.monotonic() + 60
        while answered(server) < 5 and time.monotonic() < deadline and client.poll() is None:
            time.sleep(0.02)
        server.process.kill()
        stdout, stderr = client.communicate(timeout=120)
    finally:
        server.stop()
    lines = stdout.splitlines()
    assert 5 <= len(lines) < total, (stdout, stderr)
    for line, photo in zip(lines, sorted(photo_dir.iterdir())):
        assert re.fullmatch(rf"{re.escape(str(photo))}: \S+ [01]\.\d{{4}}", line), line
    assert client.returncode == 3, stderr
    (error,) = stderr.splitlines()
    prefix = (
        f"error: Triton at {url} ({protocol}) stopped answering after {len(lines)} of {total} "
    )
    assert error.startswith(prefix + "images (") and "Traceback" not in stderr, error
    assert error.endswith(f"); {total - len(lines)} not classified"), error

"""Idle connections to tritonserver's own ports must not starve it of file descriptors.

Its metrics port (on the launcher's ``--host``) has no idle timeout: each connection that never
finishes its headers holds a descriptor for good. At a desktop's soft limit of 1,024, a thousand
of them left tritonserver unable to open its repository, and poll mode then unloaded every
model while the process stayed up. A start raises the soft limit to the hard one first.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from asl_recognition.paths import REPO_ROOT
from asl_recognition.serving.repository import build_repository
from asl_recognition.serving.triton_server import TritonServer

LOW_SOFT_LIMIT = 256  # a desktop's 1,024, scaled down so the test opens few sockets
IDLE_CONNECTIONS = 400


def _repository_index(server: TritonServer) -> list[dict]:
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"{}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def _soft_open_files(pid: int) -> int:
    with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
        line = next(row for row in limits if row.startswith("Max open files"))
    return int(line.split()[3])


def _start_with_low_soft_limit(server: TritonServer) -> None:
    """Start the server from a process whose soft limit is a desktop's (scaled down)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard))
    try:
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_metrics_connections_do_not_unload_the_models(tiny_models, tmp_path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4 * IDLE_CONNECTIONS:
        pytest.skip(f"the hard open-files limit ({hard}) leaves no room to raise")
    build_repository(tiny_models["a"].onnx, tiny_models["a"].classes, tmp_path / "repo")
    server = TritonServer.on_free_ports(
        tmp_path / "repo", poll_secs=1, exit_timeout_secs=3, log_path=tmp_path / "triton.log"
    )
    held: list[socket.socket] = []
    _start_with_low_soft_limit(server)
    try:
        server.wait_ready(90)
        assert _soft_open_files(server.process.pid) > IDLE_CONNECTIONS * 2
        for _ in range(IDLE_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", server.metrics_port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # headers never finished
            held.append(sock)
        time.sleep(4)  # several repository polls
        index = _repository_index(server)
        assert {m["name"]: m.get("state") for m in index}.get("asl") == "READY", index
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_the_images_entrypoint_starts_triton_with_the_hard_limit() -> None:
    """The server image execs tritonserver through admin_api: the same raise happens there."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= LOW_SOFT_LIMIT:
        pytest.skip(f"the hard open-files limit ({hard}) leaves no room to raise")
    command = [sys.executable, "-m", "asl_recognition.serving.admin_api", "sh", "-c", "ulimit -Sn"]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard)),
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[0]) > LOW_SOFT_LIMIT, proc.stdout

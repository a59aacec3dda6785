"""`python -m asl_recognition.serving.launcher` (what `make serve` runs): ready, then SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from asl_testkit.cli import cli_process, left_after, lines_read, processes_of, wait_for_text

from asl_recognition.netutil import free_port
from asl_recognition.paths import REPO_ROOT
from asl_recognition.serving.repository import build_repository

pytestmark = pytest.mark.server


@contextmanager
def serving_cli(tmp_path: Path, *options: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """The CLI on ``tmp_path/repo`` with free ports, logging to ``tmp_path/triton.log``."""
    http = free_port()
    ports = ("--http-port", http, "--grpc-port", free_port(), "--metrics-port", free_port())
    log = ("--log-path", tmp_path / "triton.log")
    repo = ("--repo", tmp_path / "repo")
    with cli_process("asl_recognition.serving.launcher", *repo, *ports, *log, *options) as proc:
        yield proc, http


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def test_cli_serves_until_sigterm_then_stops_cleanly(tiny_models, tmp_path) -> None:
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    with serving_cli(tmp_path, "--exit-timeout", "3") as (proc, http):
        line = proc.stdout.readline()  # printed once the server is ready
        assert line.startswith("tritonserver ready"), line + proc.stderr.read()
        assert _ready(http)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
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


def _metrics_answer(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_a_front_on_another_address_leaves_tritons_metrics_on_loopback(
    tiny_models, tmp_path
) -> None:
    """Triton's metrics port has no front (a 1 GB POST is held whole, idle connections are never
    closed): ``--host`` moves the front only; 127.0.0.2 stands in for a public address."""
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    metrics = free_port()
    with serving_cli(
        tmp_path, "--host", "127.0.0.2", "--metrics-port", metrics, "--exit-timeout", "3"
    ) as (proc, http):
        line = proc.stdout.readline()
        assert line.startswith("tritonserver ready"), line + proc.stderr.read()
        assert _metrics_answer("127.0.0.1", metrics)
        assert not _metrics_answer("127.0.0.2", metrics)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def _infer_ok(port: int, batch) -> bool:
    import tritonclient.http as thttp

    client = thttp.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        inp = thttp.InferInput("images", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        return client.infer("asl", [inp]).as_numpy("probabilities").shape == (len(batch), 29)
    except Exception:  # refused, reset or not ready while the server restarts
        return False
    finally:
        client.close()


def _post(port: int, body: bytes) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v2/models/asl/infer", body=body)
        return str(conn.getresponse().status)
    except OSError as exc:  # the server died while answering
        return type(exc).__name__
    finally:
        conn.close()


def test_cli_restarts_a_server_a_crafted_request_killed(tiny_models, tmp_path) -> None:
    """Triton 2.51 dies (SIGSEGV) on a deeply nested JSON body; the launcher brings it back.

    The front refuses that body (400) since it is known; sent to Triton's own loopback port it
    stands for any crash the front cannot foresee."""
    import numpy as np
    from asl_testkit.tiny_models import load_images

    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    batch = np.ascontiguousarray(load_images(["A"], 32, per_class=2)[0])
    triton_http = free_port()
    options = ("--exit-timeout", "2", "--restart-backoff", "0.2")
    options += ("--triton-http-port", str(triton_http))
    with serving_cli(tmp_path, *options) as (proc, http):
        line = proc.stdout.readline()  # why it did not start, when it did not (a taken port?)
        assert line.startswith("tritonserver ready"), line + proc.stderr.read()
        logged, reader = lines_read(proc.stderr)
        assert _infer_ok(http, batch)
        assert _post(http, b"[" * 400_000) == "400"  # the front: nested too deep
        answers = [_post(triton_http, b"x" * (8 << 20)), _post(triton_http, b"[" * 400_000)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _infer_ok(http, batch):
            time.sleep(0.5)
        assert _infer_ok(http, batch), answers
        if answers[1] != "500":  # crashed: the launcher's own line, before it is stopped
            assert wait_for_text(logged, "ready again (restart 1)", 60), "".join(logged)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        reader.join(10)
    stderr = "".join(logged)
    if answers[1] != "500":  # this build crashed on the nested body: the restart is logged
        assert "exited with signal SIGSEGV; restart 1/5" in stderr, stderr
        assert "ready again (restart 1)" in stderr, stderr
    # One log across restarts: the crashed process's lines are kept.
    assert (tmp_path / "triton.log").read_text().count("Started HTTPService") == 1 + (
        answers[1] != "500"
    )


def test_supervise_gives_up_after_bounded_restarts(tiny_models, tmp_path, caplog) -> None:
    """A server that keeps dying is restarted max_restarts times, with growing delays."""
    import threading

    from asl_testkit.servers import start_server

    from asl_recognition.serving.launcher import RestartPolicy, supervise

    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    server = start_server(tmp_path / "repo", tmp_path, exit_timeout_secs=1)
    policy = RestartPolicy(max_restarts=2, base_delay=0.1)
    assert [policy.delay(n) for n in (1, 2, 3, 9)] == [0.1, 0.2, 0.4, 25.6]
    assert RestartPolicy().delay(20) == RestartPolicy().max_delay
    kills: list[int] = []
    done = threading.Event()

    def killer() -> None:
        while not done.is_set() and len(kills) < 3:
            process = server.process
            if process is not None and process.poll() is None and server.is_ready():
                process.kill()
                kills.append(process.pid)
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with caplog.at_level("WARNING", logger="asl_recognition.serving.launcher"):
            assert supervise(server, lambda: time.monotonic() - started > 120, policy, 60) == 1
    finally:
        done.set()
        thread.join(5)
        server.stop()
    assert len(kills) == 3 and len(set(kills)) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("restart 1/2 in 0.1 s" in m for m in messages) == 1, messages
    assert sum("restart 2/2 in 0.2 s" in m for m in messages) == 1, messages
    assert "after 2 restarts in a row; giving up" in messages[-1], messages


def test_a_taken_http_port_is_refused_before_anything_starts(tmp_path, monkeypatch) -> None:
    """Another server on the HTTP port: a clear error, no process, no backend copy left."""
    import socket
    import tempfile

    from asl_recognition.serving.triton_server import TritonServer, TritonServerError

    (tmp_path / "repo").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # backend copies go here
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = TritonServer(
            tmp_path / "repo", http_port=taken.getsockname()[1], log_path=tmp_path / "t.log"
        )
        with pytest.raises(TritonServerError, match="already answers; pick another port"):
            server.start()
    assert server.process is None and not server.running()
    assert not list((tmp_path / "tmp").iterdir())


def test_a_launcher_killed_with_sigkill_leaves_no_tritonserver(tiny_models, tmp_path) -> None:
    """A kill -9 of ``make serve`` (the OOM killer, a closed terminal) had left tritonserver
    serving on its ports for good, its model's memory held; it now dies with the launcher."""
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    with serving_cli(tmp_path, "--exit-timeout", "2") as (proc, http):
        line = proc.stdout.readline()
        assert line.startswith("tritonserver ready"), line + proc.stderr.read()
        assert processes_of(tmp_path / "repo")
        proc.kill()
        proc.wait(10)
        left = left_after(tmp_path / "repo", 30)  # SIGTERM: Triton's own exit, a few seconds
        for pid in left:  # the orphan the old code left
            os.kill(pid, signal.SIGKILL)
        assert not left, f"{left} outlived the launcher's kill -9"

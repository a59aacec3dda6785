"""``make demo`` end to end: ``python -m asl_recognition.web.demo`` as a real process, on the
repository the last completed pipeline run recorded (what ``make run`` leaves), with a real
tritonserver started by it; SIGTERM stops the page and its Triton (no orphan left)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from asl_testkit.cli import lines_read, wait_for_text
from asl_testkit.servers import ipv6_loopback
from asl_testkit.web import landmark_repository, photo

from asl_recognition.netutil import free_port
from asl_recognition.paths import REPO_ROOT

pytestmark = pytest.mark.server
URL_LINE = re.compile(r"live recognition page: (http://127\.0\.0\.1:(\d+)/)")


def demo_env(workspace: Path) -> dict[str, str]:
    env = {**os.environ, "ASL_WORKSPACE": str(workspace), "ASL_OFFLINE": "1"}
    return {**env, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}


def record_completed_run(workspace: Path, repo: Path) -> None:
    """The state file a completed pipeline run leaves, its build step's output the repo."""
    from asl_recognition.pipeline.runs import STATE_NAME

    run = workspace / "pipeline_runs" / "20250101-000000-abcdef"
    run.mkdir(parents=True)
    steps = {"build_triton_repo": {"status": "completed", "outputs": {"repo": str(repo)}}}
    state = {"run_id": run.name, "status": "completed", "created": "2025", "steps": steps}
    (run / STATE_NAME).write_text(json.dumps(state))


def tritons_serving(repo: Path) -> list[int]:
    """Pids of tritonserver processes whose command line names ``repo``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if words and words[0].endswith(b"tritonserver") and str(repo).encode() in b" ".join(words):
            pids.append(int(cmdline.parent.name))
    return pids


def wait_for_url(proc: subprocess.Popen, lines: list[str], timeout: float) -> tuple[str, list]:
    """The page's URL once printed (``lines`` filled by ``lines_read``), and the lines so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = list(lines)
        match = URL_LINE.search("".join(seen))
        if match:
            return match.group(1), seen
        assert proc.poll() is None, f"make demo ended ({proc.returncode}):\n{''.join(seen)}"
        time.sleep(0.2)
    pytest.fail(f"no page URL printed in {timeout} s:\n{''.join(lines)}")


def test_make_demo_serves_a_frame_and_sigterm_leaves_no_triton(tmp_path: Path) -> None:
    repo = landmark_repository(tmp_path / "model")
    workspace = tmp_path / "workspace"
    record_completed_run(workspace, repo)
    metrics_port = free_port()
    command = [sys.executable, "-m", "asl_recognition.web.demo", "--port", str(free_port()),
               "--prometheus", f"http://127.0.0.1:{free_port()}",
               "--triton-metrics-port", str(metrics_port)]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, env=demo_env(workspace), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines, reader = lines_read(proc.stdout)
    try:
        url, seen = wait_for_url(proc, lines, timeout=180)
        assert any(str(repo) in line for line in seen), "not the run's repository"
        # the metrics where the status page's Prometheus scrapes them (its port, not a random one)
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        assert any(f"metrics {metrics}" in line for line in seen), seen
        assert "nv_inference_request_success" in httpx.get(metrics, timeout=30).text
        assert len(tritons_serving(repo)) == 1
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and 'id="spelled"' in page.text
        answer = httpx.post(url + "api/frame", content=photo("A").read_bytes(), timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["hand"] and answer.json()["top"][0]["label"] == "A"
        assert httpx.get(url + "status", timeout=30).status_code == 200
        # a hand-step stub killed (OOM, kill -9): Triton keeps calling it ready, the page's
        # supervisor restarts Triton and the page answers again
        from test_serving_stubs import _kill_stub

        _kill_stub(repo, "asl_hands")
        deadline, answer = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            answer = httpx.post(url + "api/frame", content=photo("A").read_bytes(), timeout=60)
            if answer.status_code == 200 and answer.json().get("hand"):
                break
            time.sleep(1)
        assert answer.status_code == 200 and answer.json()["top"][0]["label"] == "A"
        # the supervisor's own line, at its next readiness poll: a SIGTERM before it cuts that
        assert wait_for_text(lines, "ready again (restart 1)", 60), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        reader.join(10)  # the output to its end
        said = "".join(lines)
        assert "the Python backend stub of asl_hands/1 died" in said, said
        assert "ready again (restart 1)" in said, said
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while tritons_serving(repo) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tritons_serving(repo), "tritonserver outlived make demo"


def test_make_demo_without_a_repository_says_run_make_run_first(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asl_recognition.web.demo"], cwd=REPO_ROOT,
        env=demo_env(tmp_path / "empty"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run `make run` first" in lines[0], result.stderr
    assert lines[0].startswith("python -m asl_recognition.web.demo: error: no Triton model")


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_the_printed_url_of_a_page_on_ipv6_loopback_opens_it(tmp_path: Path) -> None:
    """``--host ::1`` printed ``http://::1:PORT/``, which no browser or client opens."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "asl_recognition.web", "--host", "::1", "--port", str(port),
         "--triton", "127.0.0.1:1"], cwd=REPO_ROOT, env=demo_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines, _reader = lines_read(proc.stdout)
    try:
        assert wait_for_text(lines, "Ctrl-C stops", 60), "".join(lines)
        url = re.search(r"live recognition page: (\S+) ", "".join(lines)).group(1)
        assert url == f"http://[::1]:{port}/", url
        assert httpx.get(url, timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_make_demo_on_a_taken_port_exits_2_before_starting_triton(tmp_path: Path) -> None:
    """The web port is checked first: one line, exit 2 as ``python -m asl_recognition.web``,
    and no tritonserver started (its log never written, the answer within seconds)."""
    repo = tmp_path / "repo"
    (repo / "asl").mkdir(parents=True)
    (repo / "asl" / "config.pbtxt").write_text('name: "asl"\n')
    workspace = tmp_path / "workspace"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "asl_recognition.web.demo", "--repo", str(repo),
             "--port", str(port)], cwd=REPO_ROOT, env=demo_env(workspace),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2 and result.stdout == "", result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"python -m asl_recognition.web.demo: error: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ], result.stderr
    assert not list(workspace.glob("triton_web_demo*.log")) and not tritons_serving(repo)
    assert time.monotonic() - start < 30


def test_the_demos_triton_metrics_port_is_the_one_the_monitoring_stack_scrapes() -> None:
    """``make demo`` serves the status page, whose Prometheus (``make monitor``) scrapes
    Triton at the stack's default target: a random metrics port had shown "Triton: down"."""
    from asl_recognition.monitoring.stack import StackOptions
    from asl_recognition.web.demo import DemoWebOptions

    host, _, port = StackOptions().triton_metrics.rpartition(":")
    assert (host, int(port)) == ("127.0.0.1", DemoWebOptions().triton_metrics_port)


def test_a_copied_or_moved_workspace_serves_its_own_repository(tmp_path, monkeypatch) -> None:
    """A run's state names the repository its build wrote by its absolute path: after ``cp -a``
    of the workspace, ``make demo`` in the copy served the original's repository (whatever was
    built there since), and after a move it found none. A repository built outside the
    workspace (``--repo``) is still taken as recorded."""
    import shutil

    from asl_recognition.pipeline.runs import STATE_NAME
    from asl_recognition.web.demo import pipeline_repository

    first, outside = tmp_path / "first", tmp_path / "srv" / "repo"
    run = first / "pipeline_runs" / "20250101-000000-abcdef"
    run.mkdir(parents=True)

    def record(repo: Path) -> None:
        built = {"status": "completed", "log": str(run / "build_triton_repo")}
        steps = {"build_triton_repo": {**built, "outputs": {"repo": str(repo)}}}
        state = {"run_id": run.name, "status": "completed", "created": "2025", "steps": steps}
        (run / STATE_NAME).write_text(json.dumps(state))

    record(first / "triton_repo")
    copy, moved = tmp_path / "copy", tmp_path / "moved"
    shutil.copytree(first, copy)
    for workspace in (first, copy):
        monkeypatch.setenv("ASL_WORKSPACE", str(workspace))
        assert pipeline_repository() == workspace / "triton_repo"
    shutil.move(first, moved)
    monkeypatch.setenv("ASL_WORKSPACE", str(moved))
    assert pipeline_repository() == moved / "triton_repo"
    run = moved / "pipeline_runs" / run.name
    record(outside)
    assert pipeline_repository() == outside

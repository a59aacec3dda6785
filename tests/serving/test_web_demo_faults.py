"""``make demo`` killed with ``kill -9`` (the OOM killer, a closed terminal's SIGKILL), and
two demos on one workspace. A killed demo's tritonserver goes with it: no orphan keeps the
model's memory, its ports, or the metrics port the monitoring stack's Prometheus scrapes (a
next demo moves off a taken one, so Prometheus went on scraping the orphan). Each demo keeps its
own Triton log. The model is the Python-backend stand-in of test_web_model_answers.py: the
processes are what is tested, not the model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from asl_testkit.cli import left_after, lines_read
from asl_testkit.web import photo
from test_web_demo import demo_env, tritons_serving, wait_for_url
from test_web_model_answers import stand_in

from asl_recognition.netutil import free_port
from asl_recognition.paths import REPO_ROOT

pytestmark = pytest.mark.server


def start_demo(repo: Path, workspace: Path, port: int | None = None):
    """(process, lines, reader): the demo on ``repo`` with its own ports."""
    command = [sys.executable, "-m", "asl_recognition.web.demo", "--repo", str(repo),
               "--port", str(port or free_port()), "--triton-metrics-port", "0",
               "--prometheus", f"http://127.0.0.1:{free_port()}"]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, env=demo_env(workspace), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines, reader = lines_read(proc.stdout)
    return proc, lines, reader


def stand_in_repository(root: Path) -> Path:
    mode = root / "mode"
    mode.write_text("ok")
    stand_in(root / "repo", mode, 1)
    return root / "repo"


def test_a_demo_killed_with_sigkill_leaves_no_tritonserver(tmp_path: Path) -> None:
    repo = stand_in_repository(tmp_path)
    proc, lines, reader = start_demo(repo, tmp_path / "workspace")
    try:
        url, _seen = wait_for_url(proc, lines, timeout=120)
        answer = httpx.post(url + "api/frame", content=photo("A").read_bytes(), timeout=30)
        assert answer.status_code == 200, answer.text
        assert len(tritons_serving(repo)) == 1
        proc.kill()
        proc.wait(10)
        left = left_after(repo, 30)  # SIGTERM: Triton's own exit, 10 s at most
        assert not left, f"{left} outlived the demo's kill -9 (tritonserver, its stubs)"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in tritons_serving(repo):  # the orphan the old code left (its stubs follow)
            os.kill(pid, signal.SIGTERM)
        reader.join(10)


def test_two_demos_on_one_workspace_keep_their_own_triton_logs(tmp_path: Path) -> None:
    """Both wrote ``<workspace>/triton_web_demo.log``, truncated at each start: the second demo
    wiped the first one's log while its Triton ran, and the first's crash message pointed at
    the second's log."""
    repo, workspace = stand_in_repository(tmp_path), tmp_path / "workspace"
    demos = [start_demo(repo, workspace, free_port()) for _ in range(2)]
    try:
        grpc = []
        for proc, lines, _reader in demos:
            wait_for_url(proc, lines, timeout=120)
            said = "".join(lines)
            grpc.append(said.split("Triton ready (gRPC ", 1)[1].split(",", 1)[0])
            log = Path(said.split("(log ", 1)[1].split(")", 1)[0])
            assert log.parent == workspace, said
        logs = [
            Path("".join(lines).split("(log ", 1)[1].split(")", 1)[0]) for _, lines, _ in demos
        ]
        assert logs[0] != logs[1], logs
        for log, address in zip(logs, grpc):
            assert f"Started GRPCInferenceService at {address}" in log.read_text(), log
    finally:
        for proc, _lines, reader in demos:
            proc.send_signal(signal.SIGTERM)
        for proc, _lines, reader in demos:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(10)

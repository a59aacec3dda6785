"""A Python-backend stub killed under a live tritonserver (OOM killer, ``kill -9``).

Triton 2.51 keeps the model "ready" while every request to it gets 500 and never restarts the
stub; the launcher restarts the server, and the server image's health check stops it so that
Docker's restart policy does (asl_recognition/serving/stubs.py)."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from asl_testkit.cli import lines_read, wait_for_text
from asl_testkit.servers import start_server
from test_serving_launcher import _infer_ok, serving_cli

from asl_recognition.paths import REPO_ROOT
from asl_recognition.serving.repository import build_repository
from asl_recognition.serving.stubs import proc_stat, stub_children

pytestmark = pytest.mark.server


def _stub_pids(repo: Path) -> dict[int, str]:
    """Live stubs serving a model of ``repo``, whichever server started them: pid: model."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0].endswith(b"_stub") and argv[1].startswith(bytes(repo)):
            found[int(entry.name)] = Path(os.fsdecode(argv[1])).parent.parent.name
    return found


def _kill_stub(repo: Path, model: str) -> int:
    """SIGKILL the stub of ``model`` and wait until it is dead (a zombie, or reaped)."""
    (pid,) = [p for p, name in _stub_pids(repo).items() if name == model]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = proc_stat(pid)
        if stat is None or stat.state == "Z":
            break
        time.sleep(0.01)
    return pid


def _batch() -> np.ndarray:
    from asl_testkit.tiny_models import load_images

    return np.ascontiguousarray(load_images(["A"], 32, per_class=2)[0])


def _stub_check(*options: str) -> subprocess.CompletedProcess:
    """The stub check's command line, run from the repository with this Python."""
    command = [sys.executable, "-m", "asl_recognition.serving.stubs", *options]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)


def image_python() -> str:
    """A Python 3.10 like the Triton image's (pyenv's, where this machine has one), else this one:
    the check must run there on the package alone, without this venv's site-packages."""
    import glob
    import shutil

    found = shutil.which("python3.10") or ""
    candidates = [
        found,
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10"))),
    ]
    for candidate in candidates:
        if (
            candidate
            and subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0
        ):
            return candidate
    return sys.executable


def image_folder(tmp_path: Path) -> Path:
    """/opt/asl as the server image has it: the package alone and the entrypoint script."""
    import shutil

    image = tmp_path / "opt_asl"
    if not image.exists():
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO_ROOT / "asl_recognition", image / "asl_recognition", ignore=ignore)
        shutil.copy(REPO_ROOT / "triton" / "server" / "entrypoint.sh", image / "entrypoint.sh")
    return image


def _image_health_check(tmp_path: Path, server) -> subprocess.CompletedProcess:
    """The server image's HEALTHCHECK command, on a copy of the package alone as the image has
    it (/opt/asl), :func:`image_python` for python3, and limited to ``server`` (tests run in
    parallel)."""
    from test_serving_docker import server_healthcheck

    shell, flag, command = server_healthcheck()
    image = image_folder(tmp_path)
    command = command.replace("/opt/asl", str(image)).replace("python3", image_python())
    command = command.replace("--stop-server", f"--stop-server --server-pid {server.process.pid}")
    command = command.replace("127.0.0.1:8000", server.http_url)
    return subprocess.run([shell, flag, command], capture_output=True, text=True, timeout=60)


def test_launcher_restarts_a_server_whose_stub_was_killed(tiny_models, tmp_path) -> None:
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    batch = _batch()
    options = ("--exit-timeout", "2", "--restart-backoff", "0.2")
    with serving_cli(tmp_path, *options) as (proc, http):
        assert proc.stdout.readline().startswith("tritonserver ready")
        logged, reader = lines_read(proc.stderr)
        assert _infer_ok(http, batch)
        _kill_stub(tmp_path / "repo", "asl_onnx")
        assert not _infer_ok(http, batch)  # Triton: 500 "Stub process ... is not healthy"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _infer_ok(http, batch):
            time.sleep(0.5)
        assert _infer_ok(http, batch)
        assert sorted(_stub_pids(tmp_path / "repo").values()) == ["asl_metrics", "asl_onnx"]
        assert wait_for_text(logged, "ready again (restart 1)", 60), "".join(logged)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        reader.join(10)
    stderr = "".join(logged)
    assert "the Python backend stub of asl_onnx/1 died" in stderr, stderr
    assert "restart 1/5" in stderr and "ready again (restart 1)" in stderr, stderr


def test_health_check_finds_a_dead_stub_and_stops_its_server(tiny_models, tmp_path) -> None:
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    server = start_server(tmp_path / "repo", tmp_path, exit_timeout_secs=1)
    try:
        pid = str(server.process.pid)
        healthy = _image_health_check(tmp_path, server)
        assert healthy.returncode == 0 and healthy.stderr == "", healthy.stderr
        _kill_stub(tmp_path / "repo", "asl_onnx")
        found = _stub_check("--server-pid", pid, "--grace", "0.5")
        assert found.returncode == 1
        # the check starts after the stub died: it cannot read the model from a zombie
        said = f"tritonserver {pid}: a Python backend stub died (stub pid "
        assert found.stderr.startswith(said), found.stderr
        assert server.process.poll() is None  # reported, not stopped
        stopped = _image_health_check(tmp_path, server)
        assert stopped.returncode == 1 and "stopping it so that it is restarted" in stopped.stderr
        assert server.process.wait(timeout=30) is not None
    finally:
        server.stop()


def test_a_new_version_in_poll_mode_is_no_dead_stub(tiny_models, tmp_path) -> None:
    """The stub of an unloaded version is reaped: the launcher must not restart for a swap."""
    a, a2 = tiny_models["a"], tiny_models["a2"]
    build_repository(a.onnx, a.classes, tmp_path / "repo", keep_versions=1)
    server = start_server(tmp_path / "repo", tmp_path, poll_secs=1, exit_timeout_secs=1)
    try:
        (old,) = [p for p, name in _stub_pids(tmp_path / "repo").items() if name == "asl_onnx"]
        build_repository(a2.onnx, a2.classes, tmp_path / "repo", keep_versions=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and old in stub_children(server.process.pid)[0]:
            assert server.running()  # checks every second, as the launcher does
            time.sleep(0.3)
        quiet_until = time.monotonic() + 3  # past the grace a zombie would be reported after
        while time.monotonic() < quiet_until:
            assert server.running()
            time.sleep(0.3)
        live, dead = stub_children(server.process.pid)
        assert dead == set() and "asl_onnx/2" in live.values() and old not in live
    finally:
        server.stop()


def test_the_images_modules_run_on_its_python_alone() -> None:
    """The modules the image's entrypoint and health check run, and the package __init__ files
    that ``-m`` imports first: Python 3.10, the stdlib and each other only."""
    own = {
        "asl_recognition": "__init__.py",
        "asl_recognition.serving": "serving/__init__.py",
        "asl_recognition.serving.admin_api": "serving/admin_api.py",
        "asl_recognition.serving.repo_manifest": "serving/repo_manifest.py",
        "asl_recognition.serving.stubs": "serving/stubs.py",
        "asl_recognition.options": "options.py",
        "asl_recognition.option_text": "option_text.py",
        "asl_recognition.locks": "locks.py",
        "asl_recognition.hashing": "hashing.py",
        "asl_recognition.netutil": "netutil.py",
    }
    for name in own.values():
        path = REPO_ROOT / "asl_recognition" / name
        tree = ast.parse(path.read_text(), feature_version=(3, 10))
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        stdlib = set(sys.stdlib_module_names) | {"__future__"}
        outside = {m for m in modules if m not in own and m.split(".")[0] not in stdlib}
        assert not outside, (path, outside)


def test_env_folders_of_dead_servers_are_removed_and_live_ones_kept(tmp_path, monkeypatch) -> None:
    """Each Python-based backend makes /tmp/python_env_XXXXXX and removes it only on a clean
    exit; a start removes the empty ones older than every live server (here: one live process
    stands for the servers found, and the folders are made under tmp_path)."""
    import asl_recognition.serving.leftovers as leftovers

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(1.5)
        monkeypatch.setattr(leftovers, "servers", lambda: [live.pid])
        started = leftovers._started_at(live.pid)
        # boot time is whole seconds, and a loaded machine starts a process late
        assert started is not None and -1.5 < started - (time.time() - 1.5) < 3
        folders = {name: tmp_path / f"python_env_{name}" for name in ("dead", "full", "live")}
        for folder in folders.values():
            folder.mkdir()
        (folders["full"] / "env.tar.gz").write_bytes(b"an unpacked environment")
        for name in ("dead", "full"):
            os.utime(folders[name], (started - 30, started - 30))
        removed = leftovers.remove_orphaned_env_dirs(str(tmp_path / "python_env_*"))
    finally:
        live.kill()
        live.wait()
    assert removed == [str(folders["dead"])]
    assert folders["full"].is_dir() and folders["live"].is_dir()

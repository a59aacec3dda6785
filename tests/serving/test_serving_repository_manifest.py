"""A model repository changed since its last build is never served (repo_manifest).

Before the record, a ``model.onnx`` replaced in a served repository (another model of the same
signature, so Triton loads it without a word) was reloaded by the polling server (its log shows
the reload), to answer under the old labels; nothing noticed. Model ``a2`` stands for that
replacement: the signature and classes of ``a``, other weights."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_serving_admin_api import _image_entrypoint
from test_serving_launcher import _infer_ok, serving_cli
from test_serving_stubs import _batch, image_folder, image_python

from asl_recognition.locks import exclusive
from asl_recognition.netutil import free_port
from asl_recognition.serving.repo_manifest import (
    BUILD_LOCK,
    MANIFEST_FILE,
    ManifestError,
    RepositoryGuard,
    problems,
)
from asl_recognition.serving.repository import build_repository
from asl_recognition.serving.triton_server import (
    TritonServer,
    TritonServerError,
    server_environment,
)

ONNX_V1 = "asl_onnx/1/model.onnx"


def accept_on_purpose(repo: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``repo_manifest accept``, as the server image's Python runs it: a change recorded."""
    return subprocess.run(
        [image_python(), "-m", "asl_recognition.serving.repo_manifest", "accept", str(repo)],
        capture_output=True,
        text=True,
        cwd=image_folder(tmp_path),
        timeout=60,
    )


def _built(tiny_models, tmp_path: Path, name: str = "repo") -> Path:
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / name)
    return tmp_path / name


def _swap(path: Path, make) -> None:
    path.unlink()
    make(path)


def _dangling_link(path: Path) -> None:
    path.symlink_to(path.parent / "gone")


def test_every_change_to_a_built_repository_is_named(tiny_models, tmp_path) -> None:
    repo = _built(tiny_models, tmp_path)
    assert problems(repo) == []
    kept = tmp_path / "kept"
    shutil.copytree(repo, kept)
    other = tiny_models["a2"].onnx.read_bytes()
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(repo / "asl_onnx/1", elsewhere)
    changes = {
        ONNX_V1: lambda: (repo / ONNX_V1).write_bytes(other),
        "asl/labels.txt": lambda: (repo / "asl" / "labels.txt").write_text("A\n"),
        "asl_onnx/2/model.onnx": lambda: shutil.copytree(repo / "asl_onnx/1", repo / "asl_onnx/2"),
        "asl_onnx/3": lambda: (repo / "asl_onnx/3").symlink_to(elsewhere),  # never followed
        "asl_metrics/1/model.py": lambda: (repo / "asl_metrics/1/model.py").unlink(),
        "asl_x/ (not in the record)": lambda: shutil.copytree(repo / "asl_onnx", repo / "asl_x"),
        "asl_onnx/1/classes.txt": lambda: _swap(repo / "asl_onnx/1/classes.txt", os.mkfifo),
        "asl_onnx/labels.txt": lambda: _swap(repo / "asl_onnx/labels.txt", _dangling_link),
    }
    for name, change in changes.items():
        change()
        assert name in problems(repo), name
        shutil.rmtree(repo)
        shutil.copytree(kept, repo)
        assert problems(repo) == [], name
    # Not a change: what Triton never reads (dot names: a killed build's staging, temporaries),
    # and a version or model removed whole (a rollback; nothing left to answer wrong).
    (repo / "asl_onnx" / ".staging-2-x").mkdir()
    (repo / "asl_onnx" / ".config.pbtxt.abcdefgh").write_text("half")
    shutil.rmtree(repo / "asl_onnx" / "1")
    shutil.rmtree(repo / "asl_metrics")
    assert problems(repo) == []
    (repo / MANIFEST_FILE).write_text("{not json")
    (found,) = problems(repo)
    assert found.startswith(f"{repo / MANIFEST_FILE} cannot be read"), found


def test_no_server_starts_on_a_changed_repository(tiny_models, tmp_path) -> None:
    repo = _built(tiny_models, tmp_path)
    (repo / ONNX_V1).write_bytes(tiny_models["a2"].onnx.read_bytes())
    server = TritonServer.on_free_ports(repo, exit_timeout_secs=1)
    with pytest.raises(TritonServerError, match=f"changed since its last build \\({ONNX_V1};"):
        server.start()
    assert server.process is None
    # The server image's entrypoint checks first, with Triton's Python and the package alone,
    # however tritonserver's command names the repository.
    image = image_folder(tmp_path)
    check = [image_python(), "-m", "asl_recognition.serving.repo_manifest", "check"]
    for spelling in ([f"--model-repository={repo}"], ["--model-repo", str(repo)]):
        command = check + ["tritonserver", *spelling, "--log-info=true"]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=image, timeout=60)
        assert proc.returncode == 1, proc.stderr
        assert ONNX_V1 in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    # The entrypoint script itself stops there: tritonserver (here a marker) never runs.
    env = server_environment()
    marker, server = tmp_path / "ran", tmp_path / "fake_tritonserver"
    server.write_text(f"#!/bin/sh\ntouch {marker}\n")
    server.chmod(0o755)
    command = _image_entrypoint(tmp_path, env) + [str(server), f"--model-store={repo}"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and ONNX_V1 in proc.stderr and not marker.exists(), proc.stderr
    (repo / ONNX_V1).write_bytes(tiny_models["a"].onnx.read_bytes())  # restored
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and marker.exists(), proc.stderr


def test_the_guard_waits_out_a_build_and_sees_a_removed_record(tiny_models, tmp_path) -> None:
    a2 = tiny_models["a2"]
    repo = _built(tiny_models, tmp_path)
    guard = RepositoryGuard(repo, interval=0)
    assert guard.changed() is None
    with exclusive(repo / BUILD_LOCK):  # a build writing: its half-done state is no change
        (repo / ONNX_V1).write_bytes(a2.onnx.read_bytes())
        assert guard.changed() is None
    assert ONNX_V1 in (guard.changed() or "")
    repo = _built(tiny_models, tmp_path, "no_record")
    guard = RepositoryGuard(repo, interval=0)
    assert guard.changed() is None
    (repo / MANIFEST_FILE).unlink()
    assert f"({MANIFEST_FILE} (removed);" in (guard.changed() or "")
    repo = _built(tiny_models, tmp_path, "dangling")
    guard = RepositoryGuard(repo, interval=0)
    assert guard.changed() is None
    _swap(repo / "asl_onnx/labels.txt", _dangling_link)  # a stat that fails blinds nothing
    assert "asl_onnx/labels.txt" in (guard.changed() or "")


def test_a_build_removes_versions_added_by_hand_and_refuses_an_unreadable_record(
    tiny_models, tmp_path
) -> None:
    a, a2 = tiny_models["a"], tiny_models["a2"]
    repo = _built(tiny_models, tmp_path)
    shutil.copytree(repo / "asl_onnx/1", repo / "asl_onnx/5")
    (repo / "asl_onnx/5/model.onnx").write_bytes(a2.onnx.read_bytes())
    info = build_repository(a.onnx, a.classes, repo)
    assert info["removed_changed"] == ["asl_onnx/5"] and info["versions"] == [1]
    assert problems(repo) == []
    (repo / MANIFEST_FILE).write_text("{")
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    with pytest.raises(ManifestError, match="cannot be read"):
        build_repository(a2.onnx, a2.classes, repo)
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    for text in ("[]", '{"format": 1, "models": {}, "unfinished": []}'):  # a list crashed it
        (repo / MANIFEST_FILE).write_text(text)
        assert problems(repo) == [f"{repo / MANIFEST_FILE} is not a manifest of format 1"], text


def test_a_build_removes_changed_versions_and_an_accepted_edit_is_served(
    tiny_models, tmp_path
) -> None:
    a, a2 = tiny_models["a"], tiny_models["a2"]
    repo = tmp_path / "repo"
    build_repository(a2.onnx, a2.classes, repo, keep_versions=2)
    build_repository(a.onnx, a.classes, repo, keep_versions=2)  # versions 1 (a2) and 2 (a)
    (repo / ONNX_V1).write_bytes(a.onnx.read_bytes())  # an old version altered
    info = build_repository(a.onnx, a.classes, repo, keep_versions=2)
    assert info["removed_changed"] == ["asl_onnx/1"] and info["version"] == 2 and info["reused"]
    assert info["versions"] == [2] and problems(repo) == []
    (repo / "asl_onnx/2/model.onnx").write_bytes(a2.onnx.read_bytes())  # the served one
    info = build_repository(a.onnx, a.classes, repo, keep_versions=2)
    assert (
        info["removed_changed"] == ["asl_onnx/2"] and info["version"] == 3
    )  # never a number twice
    assert (repo / "asl_onnx/3/model.onnx").read_bytes() == a.onnx.read_bytes()
    # A hand-tuned config is refused until recorded on purpose.
    config = repo / "asl_onnx" / "config.pbtxt"
    config.write_text(config.read_text() + "# tuned by hand\n")
    assert problems(repo) == ["asl_onnx/config.pbtxt"]
    proc = accept_on_purpose(repo, tmp_path)
    assert proc.returncode == 0 and "recorded 3 model folders" in proc.stdout, proc.stderr
    assert problems(repo) == []


def _front(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _ready(port: int, batch) -> bool:
    return _front(port)[0] == 200 and _infer_ok(port, batch)


def _wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.2)


@pytest.mark.server
def test_the_launcher_stops_serving_a_repository_changed_under_it(tiny_models, tmp_path) -> None:
    """A build while serving is no change; a model replaced by hand stops the server."""
    a, a2 = tiny_models["a"], tiny_models["a2"]
    repo = _built(tiny_models, tmp_path)
    batch, triton_http = _batch(), free_port()
    options = ("--exit-timeout", "2", "--poll-secs", "1", "--triton-http-port", str(triton_http))
    with serving_cli(tmp_path, *options) as (proc, http):
        assert proc.stdout.readline().startswith("tritonserver ready")
        info = build_repository(a2.onnx, a2.classes, repo)  # a real build: version 2
        log = tmp_path / "triton.log"
        _wait_for(lambda: "loading: asl_onnx:2" in log.read_text() and _ready(http, batch))
        time.sleep(2.5)  # the guard looks every 0.25-0.4 s
        assert _front(http) == (200, "ok\n") and _infer_ok(http, batch) and proc.poll() is None
        newest = repo / "asl_onnx" / str(info["version"]) / "model.onnx"
        newest.write_bytes(a.onnx.read_bytes())
        _wait_for(lambda: "changed since its last build" in _front(http)[1])
        status, body = _front(http)
        assert status == 503 and f"asl_onnx/{info['version']}/model.onnx" in body, body
        assert not _infer_ok(http, batch) and not _infer_ok(triton_http, batch)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 1
    assert "changed since its last build" in proc.stderr.read()


@pytest.mark.server
def test_the_launcher_serves_again_once_a_killed_build_is_built_again(tiny_models, tmp_path):
    """A build killed (kill -9, the OOM killer) after its new version was renamed into place
    and before its record leaves a version the record does not list: the launcher stops
    Triton, as it must. The rebuild its 503 asks for then repaired the repository, yet the
    launcher answered 503 until someone restarted it; now it serves the rebuilt repository."""
    a, a2 = tiny_models["a"], tiny_models["a2"]
    repo = _built(tiny_models, tmp_path)
    batch = _batch()
    options = ("--exit-timeout", "2", "--poll-secs", "1")
    with serving_cli(tmp_path, *options) as (proc, http):
        assert proc.stdout.readline().startswith("tritonserver ready")
        shutil.copytree(repo / "asl_onnx/1", repo / "asl_onnx/2")  # what the killed build left
        (repo / "asl_onnx/2/model.onnx").write_bytes(a2.onnx.read_bytes())
        _wait_for(lambda: "changed since its last build" in _front(http)[1])
        assert _front(http)[0] == 503 and not _infer_ok(http, batch)
        info = build_repository(a.onnx, a.classes, repo)  # the rebuild the 503 asks for
        assert info["removed_changed"] == ["asl_onnx/2"] and problems(repo) == []
        _wait_for(lambda: _ready(http, batch), 60)
        assert _front(http) == (200, "ok\n") and _infer_ok(http, batch) and proc.poll() is None
        (repo / ONNX_V1).write_bytes(a2.onnx.read_bytes())  # a change by hand: refused again
        _wait_for(lambda: "changed since its last build" in _front(http)[1])
        assert _front(http)[0] == 503
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 1


@pytest.mark.server
def test_the_images_health_check_stops_a_server_whose_repository_changed(
    tiny_models, tmp_path
) -> None:
    """compose's restart policy then starts a new one, which the entrypoint's check refuses."""
    from asl_testkit.servers import start_server
    from test_serving_stubs import _image_health_check

    repo = _built(tiny_models, tmp_path)
    server = start_server(repo, tmp_path, exit_timeout_secs=1)
    try:
        healthy = _image_health_check(tmp_path, server)
        assert healthy.returncode == 0 and healthy.stderr == "", healthy.stderr
        (repo / ONNX_V1).write_bytes(tiny_models["a2"].onnx.read_bytes())
        stopped = _image_health_check(tmp_path, server)
        said = f"tritonserver {server.process.pid}: the model repository {repo} changed"
        assert stopped.returncode == 1 and stopped.stderr.startswith(said), stopped.stderr
        assert ONNX_V1 in stopped.stderr and stopped.stderr.rstrip().endswith(
            "; stopping it so that it is restarted"
        )
        assert server.process.wait(timeout=30) is not None
    finally:
        server.stop()


@pytest.mark.parametrize(
    "folder, change",
    [
        ("asl_onnx", lambda text: text + "\nthis is { not protobuf"),
        ("asl", lambda text: text + "\n\xff garbage"),
        (
            "asl_onnx",
            lambda text: text.replace('platform: "onnxruntime_onnx"', 'backend: "python"'),
        ),
    ],
)
def test_a_rebuild_repairs_a_config_changed_since_the_build(tiny_models, tmp_path, folder, change):
    """The server refuses a changed config and says to build again; that build crashed on the
    garbage it was asked to repair (a protobuf ParseError traceback), or refused a changed
    platform line as another model's folder. A config no build recorded is one line."""
    repo = _built(tiny_models, tmp_path)
    config = repo / folder / "config.pbtxt"
    original = config.read_bytes()
    config.write_text(change(original.decode()))
    assert f"{folder}/config.pbtxt" in problems(repo)
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, repo)
    assert config.read_bytes() == original and problems(repo) == []
    other = tmp_path / "other"
    (other / "asl_onnx").mkdir(parents=True)
    (other / "asl_onnx" / "config.pbtxt").write_text(change(original.decode()))
    with pytest.raises(ValueError) as info:
        build_repository(a.onnx, a.classes, other)
    message = str(info.value)
    assert "\n" not in message and (
        "is not a model config" in message or "already holds" in message
    )


@pytest.mark.parametrize("folder", ["asl_onnx", "asl_metrics"])
def test_a_rebuild_replaces_a_linked_labels_file(tiny_models, tmp_path, folder) -> None:
    """A labels file made a link to an equal one (a copy tool that links duplicates) is refused
    as changed, and the rebuild the refusal asks for kept the link (equal content: no write),
    so the repository stayed refused after every build."""
    repo = _built(tiny_models, tmp_path)
    labels = repo / folder / "labels.txt"
    labels.unlink()
    labels.symlink_to(Path("..", "asl", "labels.txt"))
    assert f"{folder}/labels.txt" in problems(repo)
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, repo)
    assert (
        not labels.is_symlink() and labels.read_bytes() == (repo / "asl/labels.txt").read_bytes()
    )
    assert problems(repo) == []


HIDDEN_MODEL_PY = """
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        Path({marker!r}).write_text("loaded")

    def execute(self, requests):
        return []
"""


@pytest.mark.server
def test_a_model_folder_with_a_dot_name_is_not_in_the_record_and_is_refused(
    tiny_models, tmp_path
) -> None:
    """Triton 2.51 loads a model from any folder of the repository, dot names included (a
    folder ``.x`` is model ``.x``, its model.py run inside tritonserver); the check had skipped
    dot-named folders, so one added by hand was loaded while the record said nothing changed."""
    repo = _built(tiny_models, tmp_path)
    marker = tmp_path / "hidden-model-loaded"
    hidden = repo / ".x"
    (hidden / "1").mkdir(parents=True)
    (hidden / "config.pbtxt").write_text(
        'name: ".x"\nbackend: "python"\nmax_batch_size: 0\n'
        'input { name: "X" data_type: TYPE_FP32 dims: [1] }\n'
        'output { name: "Y" data_type: TYPE_FP32 dims: [1] }\n'
        "instance_group { kind: KIND_CPU count: 1 }\n"
    )
    (hidden / "1" / "model.py").write_text(HIDDEN_MODEL_PY.format(marker=str(marker)))
    assert problems(repo) == [".x/ (not in the record)"]
    server = TritonServer.on_free_ports(repo, exit_timeout_secs=1)
    with pytest.raises(TritonServerError, match=r"changed since its last build \(\.x/ "):
        server.start()
    assert server.process is None and not marker.exists()
    # Recorded on purpose, it is served: Triton does load a dot-named folder as a model.
    proc = accept_on_purpose(repo, tmp_path)
    assert proc.returncode == 0, proc.stderr
    from asl_testkit.servers import start_server

    server = start_server(repo, tmp_path, exit_timeout_secs=1)
    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/models/.x/ready") as reply:
            assert reply.status == 200 and marker.read_text() == "loaded"
    finally:
        server.stop()

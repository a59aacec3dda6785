"""A build_triton_repo task that waits for its turn at the repository (another build holds the
build lock) while the registry changes under it: real task processes, a real local registry.

Both cases were found by making the wait long on purpose: the lock is held here while the
registry changes, then let go. Before, the build had served what it chose before its turn: a
model file altered in the registry meanwhile (hash-checked too early), or a model another
pipeline had demoted meanwhile, with a clean repository manifest either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asl_recognition.locks import exclusive
from asl_recognition.paths import REPO_ROOT
from asl_recognition.registry.base import NewModel
from asl_recognition.registry.local import LocalModelRegistry
from asl_recognition.serving.repo_files import version_numbers
from asl_recognition.serving.repo_manifest import BUILD_LOCK


def _registry(tiny_models, workspace: Path) -> tuple[LocalModelRegistry, str, str]:
    """Models a and a2 (same signature, other weights) registered; a in production."""
    registry = LocalModelRegistry(workspace / "registry")
    ids = []
    for name in ("a", "a2"):
        model = tiny_models[name]
        ids.append(registry.register(NewModel("asl", str(model.onnx), str(model.classes))).id)
    registry.promote(ids[0])
    return registry, ids[0], ids[1]


def _waiting_build(workspace: Path, repo: Path, model_id: str) -> subprocess.Popen:
    """``build_triton_repo --model-id MODEL_ID`` started while the test holds the build lock;
    returned once it has opened the lock file (it chose its model before that)."""
    env = dict(os.environ, ASL_WORKSPACE=str(workspace), ASL_OFFLINE="1")
    build = subprocess.Popen(
        [sys.executable, "tasks/build_triton_repo.py", "--model-id", model_id]
        + ["--repo", str(repo), "--no-ensemble"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = str(repo / BUILD_LOCK)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and build.poll() is None:
        try:
            if lock in {os.readlink(fd) for fd in Path(f"/proc/{build.pid}/fd").iterdir()}:
                return build
        except OSError:
            pass
        time.sleep(0.05)
    build.kill()
    pytest.fail(f"the build never waited for the lock: {build.communicate()[1][-2000:]}")


@pytest.mark.parametrize("which", ["by id", "production"])
def test_a_model_file_altered_while_the_build_waits_is_never_served(tiny_models, tmp_path, which):
    """By id: the build serves the copy it checked before its turn. Production: that model is
    read again at the build's turn, so the altered file is refused, and nothing is written."""
    workspace, repo = tmp_path / "ws", tmp_path / "repo"
    registry, production, other = _registry(tiny_models, workspace)
    chosen = other if which == "by id" else production
    original = Path(registry.get(chosen).onnx_path).read_bytes()
    repo.mkdir()
    with exclusive(repo / BUILD_LOCK):
        build = _waiting_build(workspace, repo, chosen if which == "by id" else "production")
        weights = Path(registry.get(chosen).onnx_path)
        weights.chmod(0o644)
        altered = tiny_models["b" if which == "by id" else "a2"].onnx.read_bytes()
        weights.write_bytes(altered)
    _, err = build.communicate(timeout=180)
    if which == "by id":
        assert build.returncode == 0, err[-2000:]
        (version,) = version_numbers(repo / "asl")
        assert (repo / "asl" / str(version) / "model.onnx").read_bytes() == original
    else:
        assert build.returncode == 1, err[-2000:]
        last = [line for line in err.splitlines() if line.strip()][-1]
        assert f"{weights} does not match the sha256 recorded at registration" in last
        assert version_numbers(repo / "asl") == []  # nothing written


def test_a_production_model_demoted_while_the_build_waits_is_not_built(tiny_models, tmp_path):
    workspace, repo = tmp_path / "ws", tmp_path / "repo"
    registry, chosen, other = _registry(tiny_models, workspace)
    repo.mkdir()
    with exclusive(repo / BUILD_LOCK):
        build = _waiting_build(workspace, repo, "production")
        registry.promote(other)  # another pipeline's select_best, meanwhile
    _, err = build.communicate(timeout=180)
    assert build.returncode == 1, err[-2000:]
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert f"model {chosen} is no longer in production (now: {other}" in last
    assert version_numbers(repo / "asl") == []  # nothing written


def _build(workspace: Path, repo: Path, model_id: str, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ASL_WORKSPACE=str(workspace), ASL_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "tasks/build_triton_repo.py", "--model-id", model_id]
        + ["--repo", str(repo), "--no-ensemble", *flags],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_pipelines_build_of_a_model_demoted_before_the_build_started_is_not_built(
    tiny_models, tmp_path
):
    """Two pipelines: run 1's select_best promoted its model, run 2 promoted a better one and
    built it, then run 1's build started. Before, only a model still in production at the
    build's start was checked again, so run 1's build served its demoted model as the newest
    version. The pipeline wires require_production; a build by hand of any model still works."""
    from asl_recognition.pipeline.dag import ASL_DAG

    (step,) = [s for s in ASL_DAG.steps if s.name == "build_triton_repo"]
    assert step.wired["require_production"] == "true"
    workspace, repo = tmp_path / "ws", tmp_path / "repo"
    registry, chosen, other = _registry(tiny_models, workspace)
    registry.promote(other)  # run 2's select_best, before run 1's build starts
    built = _build(workspace, repo, other, "--require-production")
    assert built.returncode == 0, built.stderr[-2000:]
    served = version_numbers(repo / "asl")
    late = _build(workspace, repo, chosen, "--require-production")
    assert late.returncode == 1, late.stderr[-2000:]
    last = [line for line in late.stderr.splitlines() if line.strip()][-1]
    assert f"model {chosen} is no longer in production (now: {other}" in last
    assert version_numbers(repo / "asl") == served  # run 2's model stays the newest
    by_hand = _build(workspace, repo, chosen)
    assert by_hand.returncode == 0, by_hand.stderr[-2000:]
    assert version_numbers(repo / "asl") == served + [served[-1] + 1]


def test_require_production_needs_a_registry_model(tiny_models, tmp_path):
    model = tiny_models["a"]
    env = dict(os.environ, ASL_WORKSPACE=str(tmp_path / "ws"), ASL_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "tasks/build_triton_repo.py", "--require-production"]
        + ["--onnx", str(model.onnx), "--classes", str(model.classes)]
        + ["--repo", str(tmp_path / "repo")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 1
    assert "--require-production checks a registry model: give --model-id" in run.stderr
    assert not (tmp_path / "repo").exists()

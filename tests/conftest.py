"""Shared fixtures: an isolated workspace and the real image folders (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA, SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def worker_workspace(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Under pytest-xdist, each worker gets its own default ASL_WORKSPACE: tests that do not
    make their own would otherwise share one store and registry across processes."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["ASL_WORKSPACE"] = str(tmp_path_factory.mktemp("worker_workspace"))


@pytest.fixture
def asl_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ASL_WORKSPACE (store, registry, sessions) for one test, offline ClearML forced."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("ASL_WORKSPACE", str(ws))
    monkeypatch.setenv("ASL_OFFLINE", "1")
    return ws


@pytest.fixture
def task_env(asl_workspace: Path) -> dict[str, str]:
    """Environment for running a task script as a subprocess against ``asl_workspace``."""
    env = dict(os.environ)
    env.update(ASL_WORKSPACE=str(asl_workspace), ASL_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("CLEARML_CACHE_DIR", None)  # offline sessions go under the workspace
    env.pop("ASL_STEP_OUTPUTS", None)
    return env


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled real slice data/sample/<CLASS>/*.jpg (20 Kaggle frames per class)."""
    if not any(SAMPLE_DATA.glob("*/*.jpg")):
        pytest.skip(f"{SAMPLE_DATA} holds no images")
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def kaggle_sample_dir() -> Path:
    """../shared/data/asl_kaggle_sample (200 frames per class) where this machine has it."""
    path = SHARED_DATA / "asl_kaggle_sample"
    if not path.is_dir():
        pytest.skip(f"{path} is absent on this machine (only the bundled slice is)")
    return path

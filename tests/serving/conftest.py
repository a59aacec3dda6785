"""Fixtures for the serving tests: tiny real models and a real local Triton server.

The helpers live in tests/asl_testkit/ (tiny_models, servers; shared with the monitoring tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asl_testkit.servers import start_server
from asl_testkit.tiny_models import LazyModels

from asl_recognition.paths import SAMPLE_DATA


@pytest.fixture(scope="session", autouse=True)
def serving_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every serving test writes under a temporary ASL_WORKSPACE."""
    path = tmp_path_factory.mktemp("serving_ws")
    old = os.environ.get("ASL_WORKSPACE")
    os.environ["ASL_WORKSPACE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ASL_WORKSPACE", None)
    else:
        os.environ["ASL_WORKSPACE"] = old


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> LazyModels:
    if not SAMPLE_DATA.is_dir():
        pytest.skip(f"{SAMPLE_DATA} (bundled real images) is missing")
    return LazyModels(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def served_a(tiny_models, tmp_path_factory):
    """A real tritonserver (poll mode) on a repository generated from model a."""
    from asl_recognition.serving.repository import build_repository

    root = tmp_path_factory.mktemp("served_a")
    info = build_repository(tiny_models["a"].onnx, tiny_models["a"].classes, root / "repo")
    server = start_server(root / "repo", root, poll_secs=1, exit_timeout_secs=3)
    server.info = info
    yield server
    server.stop()

"""Fixtures for the training tests (the dataset builder is in asl_testkit/published.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from asl_testkit.published import publish_sample


@pytest.fixture()
def workspace_env(tmp_path, monkeypatch) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("ASL_WORKSPACE", str(ws))
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    for key in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    return ws


@pytest.fixture()
def published(workspace_env, tmp_path) -> str:
    return publish_sample(tmp_path)

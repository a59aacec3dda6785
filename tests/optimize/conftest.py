"""Fixtures for the optimize tests: one briefly trained CNN shared by the whole session."""

from __future__ import annotations

import pytest
from asl_testkit.published import trained_model


@pytest.fixture()
def trained(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """The shared trained model, with ASL_WORKSPACE pointing at its workspace."""
    workspace, record = trained_model(tmp_path_factory)
    monkeypatch.setenv("ASL_WORKSPACE", str(workspace))
    monkeypatch.setenv("ASL_OFFLINE", "1")
    return workspace, record

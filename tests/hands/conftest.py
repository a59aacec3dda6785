"""Fixtures for the hand-landmark tests: the verified model files and one shared landmarker."""

from __future__ import annotations

from pathlib import Path

import pytest

from asl_recognition.hands import HandLandmarker, ensure_models
from asl_recognition.hands.models import _download_wheel


@pytest.fixture(scope="session")
def hand_models() -> Path:
    """The real model files (fetched once with pip into the cache folder, then verified)."""
    return ensure_models()


@pytest.fixture(scope="session")
def landmarker(hand_models: Path) -> HandLandmarker:
    """One landmarker for the whole session; loading both models takes a fraction of a second."""
    pytest.importorskip("ai_edge_litert", reason="the runtime pin ai-edge-litert==2.3.0 is absent")
    return HandLandmarker(hand_models)


@pytest.fixture(scope="session")
def mediapipe_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned wheel, pip-downloaded once per session (pip's cache makes it quick), so the
    fetch tests can point pip at a local find-links folder instead of the index."""
    return _download_wheel(tmp_path_factory.mktemp("mediapipe_wheel"))

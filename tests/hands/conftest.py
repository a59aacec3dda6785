"""Fixtures for the hand-landmark tests: the verified model files and one shared landmarker."""

from __future__ import annotations

from pathlib import Path

import pytest

from asl_recognition.hands import HandLandmarker, ensure_models


@pytest.fixture(scope="session")
def hand_models() -> Path:
    """The real model files (fetched once with pip into the cache folder, then verified)."""
    return ensure_models()


@pytest.fixture(scope="session")
def landmarker(hand_models: Path) -> HandLandmarker:
    """One landmarker for the whole session; loading both models takes a fraction of a second."""
    pytest.importorskip("ai_edge_litert", reason="the runtime pin ai-edge-litert==2.3.0 is absent")
    return HandLandmarker(hand_models)

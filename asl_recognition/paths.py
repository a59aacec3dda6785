"""Where local state lives; one env var moves all of it (the store, registry, sessions, runs)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO_ROOT / "data" / "sample"
SAMPLE_TEST_IMAGES = REPO_ROOT / "data" / "test_images"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def workspace() -> Path:
    """The local workspace (env ``ASL_WORKSPACE``, default ``./workspace``)."""
    path = Path(os.environ.get("ASL_WORKSPACE", "workspace")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path

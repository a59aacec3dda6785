"""Fixtures of the data-stage tests: Kaggle frames and Massey crops merged into one raw version."""

from __future__ import annotations

from pathlib import Path

import pytest
from asl_testkit.images import MERGED_PER_CLASS, kaggle_slice
from asl_testkit.workspaces import offline_workspace

from asl_recognition.data.raw import validate_raw
from asl_recognition.paths import REPO_ROOT
from asl_recognition.store import get_store

EXTERNAL = REPO_ROOT / "data" / "external_sample"


@pytest.fixture(scope="session")
def external_dir() -> Path:
    """The bundled Massey crops data/external_sample/<CLASS>/*.jpeg (other signers)."""
    if not any(EXTERNAL.glob("*/*.jpeg")):
        pytest.skip(f"{EXTERNAL} holds no images")
    return EXTERNAL


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path, external_dir: Path):
    """Kaggle slice + Massey sample validated into ONE raw version (a workspace per module)."""
    ws = tmp_path_factory.mktemp("ws")
    kaggle = kaggle_slice(sample_dir, tmp_path_factory.mktemp("k") / "frames", 0)
    with offline_workspace(ws):
        out = validate_raw(
            [f"kaggle={kaggle}", f"massey={external_dir}"],
            min_per_class=MERGED_PER_CLASS,
            report_dir=ws / "rep",
            progress=False,
        )
        yield {"ws": ws, "out": out, "kaggle": kaggle, "store": get_store()}

"""Fixtures for the serving tests: tiny real models and a real local Triton server.

The helpers live in tests/asl_testkit.py (shared with the monitoring tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asl_testkit import LazyModels, start_server

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


def export_landmark_classifier(out_dir: Path, features=None, labels=None, seed: int = 0) -> Path:
    """A real landmark classifier ONNX (the training contract: FEATURES, HAND_FOUND -> PROBS).

    ``features``/``labels`` given: the MLP is fitted on them for a few hundred steps, so the
    served answer for those photos is known. Exported by the training stage's own export.
    """
    import torch

    from asl_recognition.classes import CLASSES, write_class_file
    from asl_recognition.training.export import export_onnx
    from asl_recognition.training.landmark_model import LandmarkNet

    torch.manual_seed(seed)
    net = LandmarkNet(len(CLASSES), CLASSES.index("nothing"))
    if features is not None:
        x, y = torch.as_tensor(features), torch.as_tensor(labels)
        optimiser = torch.optim.Adam(net.mlp.parameters(), lr=1e-2)
        for _ in range(200):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net.mlp(x), y).backward()
            optimiser.step()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = export_onnx(net.eval(), out_dir / "model.onnx", 0, num_classes=len(CLASSES))
    write_class_file(str(out_dir / "classes.txt"), CLASSES)
    return path

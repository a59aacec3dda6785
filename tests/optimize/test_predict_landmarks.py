"""``tasks/predict.py`` on a landmark classifier (``make run``'s model): its default runtime,
onnx, refused it ("use --runtime triton"), so the command's own example failed on the product's
model. The photos now go through the hand step's code in the process, with the detector
settings the classifier records, and the answers agree with the served ensemble's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from asl_testkit.servers import start_server
from asl_testkit.web import TEST_IMAGES, fitted_landmark_model, photo

from asl_recognition.paths import REPO_ROOT
from asl_recognition.registry.base import NewModel
from asl_recognition.registry.local import LocalModelRegistry
from asl_recognition.serving.repository import build_repository

pytestmark = pytest.mark.server
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[Path, str, Path]:
    """(workspace, model id, model folder): the fitted classifier in a workspace's registry."""
    root = tmp_path_factory.mktemp("landmarks")
    (root / "model").mkdir()
    onnx = fitted_landmark_model(root / "model")
    model = NewModel("asl", str(onnx), str(root / "model" / "classes.txt"), {}, {})
    record = LocalModelRegistry(root / "ws" / "registry").register(model)
    return root / "ws", record.id, root / "model"


def run_predict(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(workspace), ASL_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "tasks/predict.py", *args]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def test_predict_runs_the_hand_pipeline_and_agrees_with_triton(registered, tmp_path) -> None:
    workspace, model_id, model_dir = registered
    photos = [photo(label) for label in ("A", "B", "L", "Y", "nothing")]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    args = ["--model-id", model_id, "--top-k", "3"]
    proc = run_predict(workspace, *args, *[f"--image={p}" for p in [*photos, broken]])
    assert proc.returncode == 1, proc.stderr[-2000:]  # one file was not an image
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {broken}: not an image")
    local = json.loads(proc.stdout)
    assert [a["image"] for a in local] == [str(p) for p in photos]
    tops = [a["predictions"][0]["label"] for a in local]
    assert tops == ["A", "B", "L", "Y", "nothing"]  # it was fitted on these photos
    assert [a["hand_found"] for a in local] == [True, True, True, True, False]
    repo = tmp_path / "repo"
    build_repository(model_dir / "model.onnx", model_dir / "classes.txt", repo)
    server = start_server(repo, tmp_path, exit_timeout_secs=3)
    try:
        served = run_predict(
            workspace, "--runtime", "triton", "--url", server.http_url, "--top-k", "3",
            *[f"--image={p}" for p in photos],
        )  # fmt: skip
    finally:
        server.stop()
    assert served.returncode == 0, served.stderr[-2000:]
    for mine, theirs in zip(local, json.loads(served.stdout)):
        assert mine["hand_found"] == theirs["hand_found"], mine["image"]
        assert mine["predictions"][0]["label"] == theirs["predictions"][0]["label"]
        ours = {p["label"]: p["probability"] for p in mine["predictions"]}
        for answer in theirs["predictions"]:  # ties (a handless photo's zeros) in any order
            assert abs(ours.get(answer["label"], 0.0) - answer["probability"]) < TOLERANCE


def test_torch_names_the_runtimes_that_can_answer_a_landmark_classifier(registered) -> None:
    workspace, model_id, _ = registered
    proc = run_predict(
        workspace,
        "--model-id",
        model_id,
        "--runtime",
        "torch",
        f"--image={TEST_IMAGES}/A_test.jpg",
    )
    assert proc.returncode == 2
    assert "use --runtime onnx (the hand pipeline runs here) or triton" in proc.stderr

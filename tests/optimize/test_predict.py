"""``tasks/predict.py``: torch, onnxruntime and Triton give one answer format and agree.

The model is the briefly trained CNN of test_optimize.py (trained once per session), so its
torch checkpoint and its registered ONNX come from the real training code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asl_recognition.paths import REPO_ROOT, SAMPLE_TEST_IMAGES

TOLERANCE = 1e-4


def _images() -> list[Path]:
    paths = sorted(SAMPLE_TEST_IMAGES.glob("*.jpg"))
    if not paths:
        pytest.skip(f"{SAMPLE_TEST_IMAGES} holds no images")
    return paths


def _by_index(item: dict) -> dict[int, float]:
    return {p["index"]: p["probability"] for p in item["predictions"]}


def _assert_agree(left: list[dict], right: list[dict], tolerance: float) -> None:
    assert [a["image"] for a in left] == [b["image"] for b in right]
    for a, b in zip(left, right):
        assert a["predictions"][0]["index"] == b["predictions"][0]["index"], a["image"]
        probs_a, probs_b = _by_index(a), _by_index(b)
        for index in set(probs_a) & set(probs_b):
            assert abs(probs_a[index] - probs_b[index]) <= tolerance, (a["image"], index)


def test_torch_and_onnx_agree_on_the_bundled_test_images(trained) -> None:
    from asl_recognition.optimize.predict import predict_onnx, predict_torch

    _, record = trained
    paths = _images()
    torch_answers, torch_errors = predict_torch(record, paths, top_k=29)
    onnx_answers, onnx_errors = predict_onnx(record, paths, top_k=29)
    assert not torch_errors and not onnx_errors
    assert len(onnx_answers) == len(paths)
    first = onnx_answers[0]["predictions"]
    assert set(first[0]) == {"label", "index", "probability"}
    assert [p["probability"] for p in first] == sorted(
        (p["probability"] for p in first), reverse=True
    )
    assert sum(p["probability"] for p in first) == pytest.approx(1.0, abs=1e-4)
    _assert_agree(torch_answers, onnx_answers, TOLERANCE)


def run_predict(workspace: Path, model_id: str, *args: str) -> subprocess.CompletedProcess:
    """``tasks/predict.py`` as a user runs it: offline, on ``workspace``'s registry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(workspace), ASL_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "tasks/predict.py", "--model-id", model_id, *args]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_predict_command_answers_good_files_and_names_bad_ones(trained, tmp_path) -> None:
    workspace, record = trained
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    image = str(_images()[0])
    proc = run_predict(
        workspace, record.id, "--top-k", "2", "--runtime", "torch", "--image", image,
        "--image", str(broken),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    assert [a["image"] for a in answer] == [image] and len(answer[0]["predictions"]) == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert str(broken) in proc.stderr


def test_torch_checkpoint_is_the_records_then_found_by_hash(trained, tmp_path) -> None:
    """A new record names its checkpoint (a copy in the registry); a record made before that
    field existed is matched to its run by the ONNX hash; neither found is refused."""
    from asl_recognition.optimize.predict import PredictError, find_checkpoint

    workspace, record = trained
    assert record.checkpoint_path and Path(record.checkpoint_path).is_relative_to(workspace)
    assert find_checkpoint(record, runs=tmp_path) == Path(record.checkpoint_path)
    old = dataclasses.replace(record, checkpoint_path=None)
    found = find_checkpoint(old)
    assert found.name == "best.pt" and (found.parents[1] / "model.onnx").is_file()
    assert found.read_bytes() == Path(record.checkpoint_path).read_bytes()
    with pytest.raises(PredictError, match="pass --checkpoint"):
        find_checkpoint(old, runs=tmp_path)
    variant = dataclasses.replace(record, params={"variant": "int8"}, parent_id=record.id)
    with pytest.raises(PredictError, match=f"int8 variant of {record.id}"):
        find_checkpoint(variant)


@pytest.mark.server
def test_triton_agrees_with_onnx_and_serves_the_int8_variant(trained, tmp_path) -> None:
    """One real tritonserver holding the fp32 model and its INT8 variant."""
    from asl_testkit.servers import start_server

    from asl_recognition.optimize.measure import open_session, run_probabilities
    from asl_recognition.optimize.predict import decode, predict_onnx, predict_triton
    from asl_recognition.optimize.variants import quantize_int8, sample_calibration
    from asl_recognition.serving.repository import build_repository

    _, record = trained
    paths = _images()
    _, images, _ = decode(paths, 32)
    int8 = tmp_path / "model.int8.onnx"
    calibration = sample_calibration(images, [p.name for p in paths], 28, seed=0)
    quantize_int8(record.onnx_path, int8, calibration)
    repo = tmp_path / "repo"
    build_repository(record.onnx_path, record.classes_path, repo, ensemble=False)
    build_repository(int8, record.classes_path, repo, model_name="asl_int8", ensemble=False)
    server = start_server(repo, tmp_path, exit_timeout_secs=3)
    try:
        served, errors = predict_triton(paths, server.http_url, "http", "asl", top_k=3)
        served_int8, _ = predict_triton(paths, server.http_url, "http", "asl_int8", top_k=3)
    finally:
        server.stop()
    local, _ = predict_onnx(record, paths, top_k=3)
    assert not errors and len(served) == len(paths)
    _assert_agree(served, local, TOLERANCE)
    int8_local = run_probabilities(open_session(int8)[0], images)
    for item, row in zip(served_int8, int8_local):
        assert item["predictions"][0]["index"] == int(row.argmax())
        assert abs(item["predictions"][0]["probability"] - float(row.max())) <= TOLERANCE


def test_a_truncated_registered_model_is_one_line_in_optimize_and_predict(
    trained, tmp_path, monkeypatch
) -> None:
    """#19.4: onnx let protobuf's DecodeError through optimize_model as a traceback. Registered
    truncated (its sha256 is the truncated file's), so only the ONNX reader can refuse it."""
    from asl_testkit.files import assert_one_line

    from asl_recognition.optimize.options import OptimizeOptions
    from asl_recognition.optimize.predict import predict_onnx
    from asl_recognition.optimize.run import run_optimize
    from asl_recognition.optimize.variants import OptimizeError
    from asl_recognition.options import from_mapping
    from asl_recognition.registry import NewModel, get_registry

    _, record = trained
    truncated = tmp_path / "model.onnx"
    truncated.write_bytes(Path(record.onnx_path).read_bytes()[:5000])
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    model = NewModel("asl", str(truncated), record.classes_path, dataset_id=record.dataset_id)
    broken = get_registry("local").register(model)
    options = {"model_id": broken.id, "registry": "local", "profile": False}
    with pytest.raises(OptimizeError) as info:
        run_optimize(from_mapping(OptimizeOptions, options))
    assert_one_line(str(info.value), "not a readable ONNX model, truncated or corrupted")
    with pytest.raises(OptimizeError) as info:
        predict_onnx(broken, _images()[:1], top_k=1)
    assert_one_line(str(info.value), str(broken.onnx_path), "truncated or corrupted")


def test_a_named_pipe_is_named_not_waited_on(trained, tmp_path) -> None:
    """A named pipe among the images had blocked the command for good (reading it waits for a
    writer): it is named, and the other images answered."""
    workspace, record = trained
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    image = str(_images()[0])
    proc = run_predict(
        workspace, record.id, "--top-k", "1", "--image", str(pipe), "--image", image,
        "--image", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert [a["image"] for a in json.loads(proc.stdout)] == [image]
    assert (
        f"error: {pipe}: not an image (not_an_image: {pipe} is not a regular file" in proc.stderr
    )

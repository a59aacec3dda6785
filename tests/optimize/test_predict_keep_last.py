"""``predict --runtime torch`` on a model trained with ``--keep last``: the record names the run's
``last.pt``, which nests the run's settings under ``meta`` (``best.pt`` holds them at its top)."""

from __future__ import annotations

import pytest
from asl_testkit.published import publish_sample, train_options

from asl_recognition.paths import SAMPLE_TEST_IMAGES
from asl_recognition.registry import get_registry
from asl_recognition.training.run import run_training


@pytest.fixture()
def kept_last(tmp_path, monkeypatch):
    """A CNN registered from its last epoch (``--keep last``) in a workspace of its own."""
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("ASL_OFFLINE", "1")
    dataset_id = publish_sample(tmp_path)
    options = train_options(
        model="cnn", dataset_version=dataset_id, batch_size=32, augment="none", epochs=1,
        max_steps=2, keep="last", external="none", output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    return get_registry().get(run_training(options)["model_id"])


def test_torch_answers_a_model_kept_from_its_last_epoch(kept_last) -> None:
    """Before: "checkpoint.pt: model None is not an image classifier checkpoint", exit 2."""
    from asl_recognition.optimize.predict import predict_onnx, predict_torch

    assert kept_last.checkpoint_path.endswith("checkpoint.pt")
    paths = sorted(SAMPLE_TEST_IMAGES.glob("*.jpg"))[:4]
    torch_answers, torch_errors = predict_torch(kept_last, paths, top_k=3)
    onnx_answers, _ = predict_onnx(kept_last, paths, top_k=3)
    assert not torch_errors and len(torch_answers) == len(paths)
    for a, b in zip(torch_answers, onnx_answers):
        assert a["predictions"][0]["index"] == b["predictions"][0]["index"], a["image"]
        got, want = a["predictions"][0]["probability"], b["predictions"][0]["probability"]
        assert got == pytest.approx(want, abs=1e-4)

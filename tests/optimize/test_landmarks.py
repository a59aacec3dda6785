"""INT8 of the landmark classifier (FEATURES + HAND_FOUND -> PROBS), served by Triton.

The classifier is trained here by the training code on the bundled sample's ASL_landmarks rows
(measured by the real LiteRT hand landmarker), registered in a temporary local registry, then
quantised, scored and served by ``run_optimize`` itself: one real tritonserver holds the fp32,
INT8 and optimised classifiers as plain models made by the repository generator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from asl_testkit.published import HOLDOUT_HANDS, publish_sample, train_options
from asl_testkit.workspaces import offline_workspace

from asl_recognition.options import from_mapping

# Served INT8 answers may differ from fp32's on at most this share of the bundled test rows.
TOP1_TOLERANCE = 0.1
REQUESTS = 24


@pytest.fixture(scope="module")
def landmark_model(tmp_path_factory):
    """(workspace, registry record, ASL_landmarks id) of a briefly trained landmark model."""
    pytest.importorskip("ai_edge_litert", reason="the hand landmark runtime is absent")
    from asl_recognition.data.landmarks import publish_landmarks
    from asl_recognition.hands import ensure_models
    from asl_recognition.registry import get_registry
    from asl_recognition.training.run import run_training

    ensure_models()
    root = tmp_path_factory.mktemp("landmarks")
    with offline_workspace(root / "ws"):
        dataset_id = publish_sample(root, per_class=5, holdout_hands=HOLDOUT_HANDS)
        landmarks_id = publish_landmarks(dataset_id, progress=False)["landmarks_id"]
        options = train_options(
            model="landmarks",
            dataset_version=dataset_id,
            landmarks_version="latest",  # the record must keep the exact version instead
            batch_size=32,
            epochs=20,
            external="none",
        )
        out = run_training(options)
        yield root / "ws", get_registry("local").get(out["model_id"]), landmarks_id


@pytest.fixture()
def workspace(landmark_model, monkeypatch):
    monkeypatch.setenv("ASL_WORKSPACE", str(landmark_model[0]))
    monkeypatch.setenv("ASL_OFFLINE", "1")
    return landmark_model


def _optimize(model_id: str, **values):
    from asl_recognition.optimize.options import OptimizeOptions
    from asl_recognition.optimize.run import run_optimize

    opts = {"model_id": model_id, "registry": "local", "rounds": 3, "profile": False, **values}
    outputs = run_optimize(from_mapping(OptimizeOptions, opts))
    return outputs, json.loads(Path(outputs["report"]).read_text())


@pytest.mark.server
def test_landmark_int8_is_calibrated_on_train_rows_and_served_like_fp32(workspace) -> None:
    import onnx

    from asl_recognition.data.landmarks import load_table
    from asl_recognition.registry.local import LocalModelRegistry

    ws, record, landmarks_id = workspace
    assert record.params["landmarks_id"] == landmarks_id  # kept by training, not "latest"
    outputs, report = _optimize(record.id, triton_requests=REQUESTS, calibration_images=40)
    assert report["contract"] == "landmarks" and report["image_size"] == 0

    # calibration: a seeded sample of TRAIN rows with a hand, of the model's ASL_landmarks
    calibration = report["calibration"]
    table, _ = load_table(landmarks_id)
    train_hands = set(table[(table["split"] == "train") & table["hand_found"].astype(bool)].path)
    assert calibration["source"] == landmarks_id and calibration["seed"] == 0
    assert calibration["count"] == len(calibration["paths"]) == min(40, len(train_hands))
    assert set(calibration["paths"]) <= train_hands
    int8 = report["variants"]["int8"]
    graph = onnx.load(int8["path"]).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    assert [i.name for i in graph.input] == ["FEATURES", "HAND_FOUND"]
    # every variant keeps the hand detector record, so it is served with the table's hand step
    from asl_recognition.hands.landmarker import DETECTOR_METADATA_KEY

    recorded = {p.key: p.value for p in onnx.load(record.onnx_path).metadata_props}
    assert DETECTOR_METADATA_KEY in recorded
    for name in ("int8", "optimized"):
        props = {
            p.key: p.value for p in onnx.load(report["variants"][name]["path"]).metadata_props
        }
        assert props[DETECTOR_METADATA_KEY] == recorded[DETECTOR_METADATA_KEY], name

    # scored on the test split and per held-out group, fp32 and INT8 alike
    assert report["test_images"] == int((table["split"] == "test").sum())
    for name in ("fp32", "int8"):
        assert set(report["variants"][name]["holdout"]) == {f"massey/{HOLDOUT_HANDS[0]}"}
    assert int8["agreement"]["top1_agreement"] >= 1 - TOP1_TOLERANCE

    # served by tritonserver: images/s for each variant, INT8 answering like fp32
    served = report["triton"]["variants"]
    assert set(served) == {"fp32", "int8", "optimized"}
    for name, figures in served.items():
        assert figures["images_per_second"] > 0 and figures["requests"] == REQUESTS
        assert figures["top1_agreement_onnxruntime"] == 1.0, name
    assert served["int8"]["top1_agreement_fp32"] >= 1 - TOP1_TOLERANCE
    markdown = (Path(outputs["report"]).parent / "report.md").read_text()
    assert "classifier only (landmark rows in)" in markdown and "LiteRT" in markdown

    # registered as versions whose parent is the fp32 model, natively and in params
    registry = LocalModelRegistry(ws / "registry")
    variant = registry.get(outputs["int8_model_id"])
    assert variant.parent_id == record.id and variant.params["parent"] == record.id
    assert variant.params["optimization"]["calibration"]["paths"] == calibration["paths"]
    assert variant.metrics["triton_images_per_second"] == served["int8"]["images_per_second"]
    assert registry.get(record.id).parent_id is None


def test_skipped_triton_is_reported_and_nothing_registered(workspace, tmp_path) -> None:
    from asl_recognition.registry.local import LocalModelRegistry

    ws, record, _ = workspace
    before = len(LocalModelRegistry(ws / "registry").list("asl"))
    outputs, report = _optimize(
        record.id,
        triton_requests=0,
        register=False,
        per_channel="on",
        output_dir=str(tmp_path / "out"),
    )
    assert report["triton"] == {"skipped": "--triton-requests 0"}
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Triton images/s: skipped (--triton-requests 0)." in markdown
    int8_row = next(line for line in markdown.splitlines() if line.startswith("| int8 |"))
    assert int8_row.rstrip(" |").endswith("skipped")
    assert outputs["int8_model_id"] is None
    assert len(LocalModelRegistry(ws / "registry").list("asl")) == before
    assert np.isfinite(report["variants"]["int8"]["test"]["accuracy"])


def test_a_landmark_record_without_its_table_is_one_line(workspace) -> None:
    """A record naming an ASL_landmarks version that does not exist: refused, nothing written."""
    from asl_recognition.optimize.options import OptimizeOptions
    from asl_recognition.optimize.run import load_inputs
    from asl_recognition.optimize.variants import OptimizeError
    from asl_recognition.registry import NewModel
    from asl_recognition.registry.local import LocalModelRegistry

    ws, record, _ = workspace
    registry = LocalModelRegistry(ws / "registry")
    broken = registry.register(
        NewModel(
            name="asl_broken",
            onnx_path=record.onnx_path,
            classes_path=record.classes_path,
            params={**record.params, "landmarks_id": "0" * 32},
            dataset_id=record.dataset_id,
        )
    )
    opts = from_mapping(OptimizeOptions, {"model_id": broken.id, "registry": "local"})
    before = sorted(ws.glob("optimize/*"))
    with pytest.raises(OptimizeError, match=f"model {broken.id}: .*landmarks") as info:
        load_inputs(registry, opts)
    assert "\n" not in str(info.value)
    assert sorted(ws.glob("optimize/*")) == before


def test_torch_runtime_on_the_landmark_model_is_one_line(workspace, capsys) -> None:
    """#19.16: ``predict --runtime torch`` said the landmark checkpoint was "not a training
    checkpoint" (a traceback's worth of confusion); it is the landmark classifier."""
    import importlib.util

    from asl_recognition.paths import REPO_ROOT, SAMPLE_TEST_IMAGES

    _, record, _ = workspace
    spec = importlib.util.spec_from_file_location("predict_task", REPO_ROOT / "tasks/predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image = str(sorted(SAMPLE_TEST_IMAGES.glob("*.jpg"))[0])
    capsys.readouterr()
    argv = ["--image", image, "--runtime", "torch", "--model-id", record.id, "--registry", "local"]
    assert module.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("predict: error: ")
    assert (
        "landmark classifier" in err
        and "--runtime onnx (the hand pipeline runs here) or triton" in err
    )
    checkpoint = ["--checkpoint", record.checkpoint_path]
    assert module.main(argv + checkpoint) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "landmark classifier" in err

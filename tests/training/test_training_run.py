"""Training on the real bundled sample: logs, ONNX contract, parity, baseline, registry, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from asl_testkit.published import train_options

from asl_recognition.classes import CLASSES, read_class_file
from asl_recognition.paths import REPO_ROOT
from asl_recognition.training.export import check_parity
from asl_recognition.training.models import build_model
from asl_recognition.training.run import run_training

EXTERNAL = REPO_ROOT / "data" / "external_sample"
FAST = {"model": "cnn", "batch_size": 32, "augment": "none", "external": str(EXTERNAL)}


def test_train_logs_exports_and_registers(published, tmp_path) -> None:
    run_dir = tmp_path / "run"
    out = run_training(
        train_options(**{**FAST, "augment": "light"}, epochs=3, output_dir=str(run_dir))
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["history"]

    # the loss falls on real images
    assert len(history) == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.1

    # TensorBoard holds per-epoch scalars for train and val, sample images and the matrix figure
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for key in ("loss", "accuracy", "macro_f1", "lr"):
        for split in ("train", "val"):
            assert f"{key}/{split}" in scalars
            assert [e.step for e in events.Scalars(f"{key}/{split}")] == [1, 2, 3]
    assert {"samples/val", "confusion_matrix/val", "confusion_matrix/test"} <= set(
        events.Tags()["images"]
    )
    logged = [e.value for e in events.Scalars("loss/train")]
    assert logged == pytest.approx([h["train_loss"] for h in history], rel=1e-5)

    # ONNX contract: uint8 images [N,3,H,W] with dynamic N -> float32 probabilities [N,C]
    onnx_path = run_dir / "model.onnx"
    graph = onnx.load(str(onnx_path))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,) = graph.graph.input
    (outp,) = graph.graph.output
    assert inp.name == "images" and outp.name == "probabilities"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert outp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        batch = np.random.default_rng(n).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        (probs,) = session.run(["probabilities"], {"images": batch})
        assert probs.shape == (n, len(CLASSES)) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)

    # parity on the whole test split, checked again here with the best checkpoint
    assert metrics["parity"]["images"] == metrics["split_sizes"]["test"] == 116
    assert metrics["parity"]["max_abs_diff"] <= 1e-4 and metrics["parity"]["top1_mismatches"] == 0
    model = build_model("cnn", len(CLASSES), 32)
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)
    model.load_state_dict(best["model"])
    from asl_recognition.training.data import load_split
    from asl_recognition.training.data import open_published as open_ds

    ds = open_ds("latest")
    test = load_split(ds.root, "test", ds.classes, 32)
    parity = check_parity(onnx_path, model, test.images)
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_mismatches"] == 0

    # class list, baseline, metrics and registry record
    assert read_class_file(str(run_dir / "classes.txt")) == list(CLASSES)
    assert (run_dir / "classes.txt").read_text() == "\n".join(CLASSES) + "\n"
    from asl_recognition.monitoring.baseline import load_baseline

    baseline_raw = json.loads((run_dir / "baseline.json").read_text())
    assert sum(baseline_raw["class_distribution"].values()) == metrics["split_sizes"]["train"]
    assert baseline_raw["confidence_histogram"]["buckets"] == pytest.approx(
        [0.1 * i for i in range(1, 11)]
    )
    assert sum(baseline_raw["confidence_histogram"]["counts"]) == metrics["split_sizes"]["val"]
    baseline = load_baseline(run_dir / "baseline.json")
    assert set(baseline.class_shares) == set(CLASSES)
    assert 0 < baseline.confidence_mean <= 1
    for key in ("val_macro_f1", "test_accuracy", "test_macro_f1", "external_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0 and out[key] == pytest.approx(metrics[key])
    assert metrics["external"]["images"] == 130 and len(metrics["external"]["classes"]) == 26
    assert metrics["dataset_leaky"] is False

    from asl_recognition.registry import get_registry

    record = get_registry().get(out["model_id"])
    assert record.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    # both matrices travel with the record: select_best logs val's, the status page test's
    from asl_recognition.pipeline.selection import confusion_matrix
    from asl_recognition.registry.confusion import find_confusion

    val_cm = np.asarray(confusion_matrix(record, "val_macro_f1"))
    assert val_cm.shape == (29, 29) and val_cm.sum() == metrics["split_sizes"]["val"]
    shown = find_confusion(record)
    assert shown["split"] == "test"
    assert np.asarray(shown["matrix"]).sum() == metrics["split_sizes"]["test"]
    assert record.dataset_id == metrics["dataset_id"]
    assert Path(record.onnx_path).read_bytes() == onnx_path.read_bytes()
    assert Path(record.baseline_path).is_file() and out["onnx_path"] == record.onnx_path


def test_resume_gives_the_uninterrupted_result(published, tmp_path) -> None:
    params = {**FAST, "augment": "light", "max_steps": 4, "register": False, "seed": 3}
    straight = tmp_path / "straight"
    run_training(train_options(**params, epochs=2, output_dir=str(straight)))
    split = tmp_path / "split"
    run_training(train_options(**params, epochs=1, output_dir=str(split)))
    first = torch.load(split / "checkpoints" / "last.pt", weights_only=False)
    assert first["epoch"] == 1
    run_training(train_options(**params, epochs=2, output_dir=str(split), resume=True))

    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert a["history"] == b["history"]
    ma = json.loads((straight / "metrics.json").read_text())
    mb = json.loads((split / "metrics.json").read_text())
    for key in ("val_macro_f1", "test_accuracy", "test_macro_f1", "external_accuracy"):
        assert ma[key] == mb[key]
    assert (straight / "model.onnx").read_bytes() == (split / "model.onnx").read_bytes()

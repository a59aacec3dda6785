"""Weights that diverge on an epoch's last step: no finite loss is left to catch them, so the
validation after it and the parity gate must. Real runs on real images (data/sample)."""

from __future__ import annotations

import pytest
import torch
from asl_testkit.files import assert_one_line
from asl_testkit.published import train_options

from asl_recognition.classes import CLASSES
from asl_recognition.registry import get_registry
from asl_recognition.training.errors import NonFiniteLossError, ParityError
from asl_recognition.training.export import check_parity, export_onnx
from asl_recognition.training.models import build_model
from asl_recognition.training.run import run_training

FAST = {"model": "cnn", "batch_size": 32, "augment": "none", "external": "none", "epochs": 1}


def test_weights_that_diverge_on_the_last_step_are_never_registered(published, tmp_path) -> None:
    """lr 1e30: the one step's loss is finite and the step leaves every output NaN. Before, the
    NaN model passed the parity gate (``max(0.0, nan)`` is 0.0) and was registered; in a fresh
    workspace select_best promoted it and build_triton_repo served it."""
    run_dir = tmp_path / "nan"
    options = train_options(**FAST, max_steps=1, lr=1e30, output_dir=str(run_dir))
    with pytest.raises(NonFiniteLossError) as info:
        run_training(options)
    assert_one_line(str(info.value), "val loss became nan after epoch 1", "last good checkpoint")
    assert get_registry().list("asl") == []
    assert not (run_dir / "model.onnx").exists()
    assert list((run_dir / "checkpoints").iterdir()) == []  # nothing to resume or export


def test_the_parity_gate_refuses_a_graph_that_answers_nan(tmp_path) -> None:
    model = build_model("cnn", len(CLASSES), 32)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    onnx_path = export_onnx(model.eval(), tmp_path / "nan.onnx", 32, len(CLASSES))
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(ParityError) as info:
        check_parity(onnx_path, model, images)
    assert_one_line(str(info.value), "not finite")

"""select_best's held-out gate when production lacks the compared metric: real local registry,
real ONNX files and class lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from asl_testkit.tiny_models import contract_onnx

from asl_recognition.classes import CLASSES
from asl_recognition.pipeline.options import SelectBestOptions
from asl_recognition.pipeline.selection import select_best
from asl_recognition.registry.base import NewModel
from asl_recognition.registry.local import LocalModelRegistry


def register(registry, folder: Path, classes: list[str] = CLASSES, **metrics) -> str:
    """A servable model (ONNX output width = its class count) with the given metrics."""
    folder.mkdir(parents=True)
    contract_onnx(folder / "model.onnx", len(classes))
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    model = NewModel("asl", str(folder / "model.onnx"), str(folder / "classes.txt"), metrics)
    return registry.register(model).id


@pytest.fixture()
def registry(tmp_path):
    return LocalModelRegistry(tmp_path / "registry")


def test_held_out_gate_holds_when_production_lacks_the_metric(registry, tmp_path):
    """Production without external_accuracy (trained with --external none, or an INT8 variant,
    whose record has none): a candidate 0.7 worse on a held-out signer had been promoted."""
    hands = {"massey/hand4": {"accuracy": 0.9}, "massey/hand5": {"accuracy": 0.85}}
    served = register(registry, tmp_path / "p", val_macro_f1=0.9, holdout=hands)
    assert select_best(registry, SelectBestOptions(model_id=served)).promoted
    worse = {"massey/hand4": {"accuracy": 0.2}, "massey/hand5": {"accuracy": 0.1}}
    candidate = register(registry, tmp_path / "c", external_accuracy=0.6, holdout=worse)
    opts = SelectBestOptions(model_id=candidate, metric="external_accuracy")
    decision = select_best(registry, opts)
    assert not decision.promoted
    assert "regresses on held-out groups" in decision.reason
    assert registry.production().id == served

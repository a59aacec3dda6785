"""select_best's gates against production: a candidate of other classes, a production record
without the compared metric. Real local registry, real ONNX files and class lists."""

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


def test_a_model_of_other_classes_does_not_replace_production(registry, tmp_path):
    """A 3-class model scores a higher macro-F1 than the 29-class one: it had been promoted,
    and the served model then answered A, B or nothing to every sign."""
    served = register(registry, tmp_path / "p", val_macro_f1=0.95)
    assert select_best(registry, SelectBestOptions(model_id=served)).promoted
    fewer = register(registry, tmp_path / "c", ["A", "B", "nothing"], val_macro_f1=0.99)
    decision = select_best(registry, SelectBestOptions(model_id=fewer))
    assert not decision.promoted and "classes differ from production's" in decision.reason
    assert registry.production().id == served
    reordered = register(registry, tmp_path / "r", CLASSES[::-1], val_macro_f1=0.97)
    assert select_best(registry, SelectBestOptions(model_id=reordered)).promoted


def test_an_altered_production_class_list_does_not_block_promotions(registry, tmp_path):
    """Production's files are not verified for the comparison (only its metrics are read): its
    class list, altered on disk, is not taken as the classes it answers."""
    served = register(registry, tmp_path / "p", val_macro_f1=0.95)
    assert select_best(registry, SelectBestOptions(model_id=served)).promoted
    Path(registry.get(served).classes_path).write_text("A\nB\nnothing\n")
    better = register(registry, tmp_path / "c", val_macro_f1=0.99)
    assert select_best(registry, SelectBestOptions(model_id=better)).promoted


def test_a_change_of_classes_on_purpose_is_promoted_with_class_change(registry, tmp_path):
    """A new class list is the product's promise (no hand edit): --class-change promotes it
    whatever its metric, since metrics over other classes do not compare."""
    served = register(registry, tmp_path / "p", val_macro_f1=0.95)
    assert select_best(registry, SelectBestOptions(model_id=served)).promoted
    more = register(registry, tmp_path / "c", [*CLASSES, "hello"], val_macro_f1=0.90)
    kept = select_best(registry, SelectBestOptions(model_id=more))
    assert not kept.promoted and "--class-change promotes it" in kept.reason
    changed = select_best(registry, SelectBestOptions(model_id=more, class_change=True))
    assert changed.promoted and "extra ['hello']" in changed.reason
    assert registry.production().id == more


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

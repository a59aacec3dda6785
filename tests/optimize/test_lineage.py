"""The local registry's lineage fields: a variant's parent and a model's training checkpoint.

Real files in a temporary registry: the parent must exist before anything is copied, the
checkpoint is copied with the model, and a record written before these fields existed loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.registry import ModelNotFoundError, NewModel
from asl_recognition.registry.local import LocalModelRegistry


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "model.onnx").write_bytes(b"onnx bytes")
    write_class_file(str(run / "classes.txt"), list(CLASSES))
    (run / "checkpoints" / "best.pt").write_bytes(b"checkpoint bytes")
    return {
        "onnx": run / "model.onnx",
        "classes": run / "classes.txt",
        "ckpt": run / "checkpoints",
    }


def _model(files: dict[str, Path], **fields) -> NewModel:
    return NewModel("asl", str(files["onnx"]), str(files["classes"]), **fields)


def test_parent_and_checkpoint_are_kept_and_an_unknown_parent_is_refused(files, tmp_path) -> None:
    registry = LocalModelRegistry(tmp_path / "registry")
    parent = registry.register(_model(files, checkpoint_path=str(files["ckpt"] / "best.pt")))
    child = registry.register(_model(files, parent_id=parent.id, tags=("int8",)))

    (files["ckpt"] / "best.pt").unlink()  # the run is gone: the registry holds its own copy
    stored = registry.get(parent.id)
    assert Path(stored.checkpoint_path).read_bytes() == b"checkpoint bytes"
    assert Path(stored.checkpoint_path).is_relative_to(tmp_path / "registry")
    assert stored.parent_id is None
    assert registry.get(child.id).parent_id == parent.id
    assert registry.get(child.id).tags == ["int8"] and registry.get(child.id).version == 2

    copied = sorted((tmp_path / "registry" / "files").iterdir())
    with pytest.raises(ModelNotFoundError, match="no model with id " + "feed" * 8):
        registry.register(_model(files, parent_id="feed" * 8))
    assert sorted((tmp_path / "registry" / "files").iterdir()) == copied  # nothing copied
    assert len(registry.list("asl")) == 2


def test_a_record_written_before_the_lineage_fields_still_loads(files, tmp_path) -> None:
    registry = LocalModelRegistry(tmp_path / "registry")
    record = registry.register(_model(files))
    path = tmp_path / "registry" / "records" / f"{record.id}.json"
    old = json.loads(path.read_text())
    for key in ("parent_id", "checkpoint_path"):
        del old[key]
    path.write_text(json.dumps(old))
    loaded = registry.get(record.id)
    assert loaded.parent_id is None and loaded.checkpoint_path is None
    assert loaded.onnx_path == record.onnx_path

"""The ClearML model registry's exact SDK calls, against mock SDK objects.

A ClearML server cannot run here and ``OutputModel`` fails in offline mode (clearml#1243), so
``clearml.OutputModel`` / ``clearml.Model`` / ``clearml.Task`` are replaced by the ``Mock*``
classes below, which record every call. The files passed in are real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.registry import PRODUCTION_TAG, ModelNotFoundError, get_registry

# Not sorted on purpose: label indices must follow classes.txt order, not alphabetical order.
ORDERED = list(reversed(CLASSES))


class MockTask:
    """Stands in for ``clearml.Task``: only ``current_task`` and ``id`` are used."""

    running: "MockTask | None" = None

    def __init__(self, task_id: str = "mock-task-1") -> None:
        self.id = task_id

    @classmethod
    def current_task(cls) -> "MockTask | None":
        return cls.running


class MockModel:
    """Stands in for ``clearml.Model``: a stored model the registry queries, tags and publishes."""

    store: dict[str, "MockModel"] = {}
    query_calls: list[dict[str, Any]] = []
    downloads = 0

    def __init__(self, model_id: str, **fields: Any) -> None:
        if fields:  # created by the test
            self.id = model_id
            self.name = fields["name"]
            self.tags = list(fields.get("tags", []))
            self.labels = dict(fields["labels"])
            self.metadata = dict(fields["metadata"])
            self.weights = fields["weights"]
            self.task = fields.get("task")
            self.published = bool(fields.get("published", False))
            self.publish_calls = 0
            MockModel.store[model_id] = self
        else:  # ``Model(model_id=...)`` as the registry calls it: the stored model's state
            if model_id not in MockModel.store:
                raise ValueError(f"mock: no model {model_id}")
            self.__dict__ = MockModel.store[model_id].__dict__

    @classmethod
    def query_models(cls, **kwargs: Any) -> list["MockModel"]:
        cls.query_calls.append(kwargs)
        tags = kwargs.get("tags") or []
        return [
            m
            for m in cls.store.values()
            if m.name == kwargs["model_name"] and all(t in m.tags for t in tags)
        ]

    def get_all_metadata(self) -> dict[str, dict[str, str]]:
        return self.metadata

    def get_local_copy(self, raise_on_error: bool = False) -> str:
        MockModel.downloads += 1
        return self.weights

    def publish(self) -> None:
        self.publish_calls += 1
        self.published = True


class MockOutputModel:
    """Stands in for ``clearml.OutputModel``: records the constructor and every method call."""

    created: list["MockOutputModel"] = []

    def __init__(self, **kwargs: Any) -> None:
        self.init_kwargs = kwargs
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.id = f"mock-model-{len(MockOutputModel.created) + 1}"
        MockOutputModel.created.append(self)

    def update_weights(self, **kwargs: Any) -> str:
        self.calls.append(("update_weights", kwargs))
        return "file://mock"

    def set_all_metadata(self, metadata: dict[str, Any], replace: bool = True) -> bool:
        self.calls.append(("set_all_metadata", {"metadata": metadata, "replace": replace}))
        return True


@pytest.fixture()
def mock_clearml(monkeypatch, workspace_env):
    """Patch the three SDK names the registry imports from ``clearml``; reset mock state."""
    import clearml

    MockModel.store, MockModel.query_calls, MockModel.downloads = {}, [], 0
    MockOutputModel.created = []
    MockTask.running = None
    monkeypatch.setattr(clearml, "OutputModel", MockOutputModel)
    monkeypatch.setattr(clearml, "Model", MockModel)
    monkeypatch.setattr(clearml, "Task", MockTask)
    return clearml


@pytest.fixture()
def model_files(tmp_path) -> dict[str, Path]:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07mock-onnx-bytes")
    classes = tmp_path / "classes.txt"
    write_class_file(str(classes), ORDERED)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"mean_confidence": 0.8, "classes": ORDERED}))
    return {"onnx": onnx, "classes": classes, "baseline": baseline}


def _stored(model_id: str, name: str, version: int, weights: Path, tags=()) -> MockModel:
    return MockModel(
        model_id,
        name=name,
        tags=list(tags),
        labels={c: i for i, c in enumerate(ORDERED)},
        metadata={
            "version": {"value": str(version), "type": "int"},
            "metrics": {"value": json.dumps({"test_accuracy": 0.5 + version / 10}), "type": "str"},
            "params": {"value": "{}", "type": "str"},
            "dataset_id": {"value": "ds-1", "type": "str"},
            "baseline": {"value": "null", "type": "str"},
        },
        weights=str(weights),
        task="mock-task-0",
    )


def test_register_makes_an_output_model_with_label_enumeration(mock_clearml, model_files) -> None:
    _stored("existing-1", "asl", 1, model_files["onnx"])
    mock_task = MockTask("mock-task-7")
    registry = get_registry("clearml")
    metrics = {"test_accuracy": 0.93, "val_macro_f1": 0.9}
    record = registry.register(
        "asl",
        str(model_files["onnx"]),
        str(model_files["classes"]),
        metrics,
        {"epochs": 3, "weights": None},
        task=mock_task,
        dataset_id="ds-42",
        baseline_path=str(model_files["baseline"]),
    )

    (mock_output_model,) = MockOutputModel.created
    kwargs = mock_output_model.init_kwargs
    assert kwargs["task"] is mock_task
    assert kwargs["framework"] == "ONNX"
    assert kwargs["name"] == "asl"
    assert kwargs["tags"] == ["v2"]  # one model was already there
    labels = kwargs["label_enumeration"]
    assert labels == {c: i for i, c in enumerate(ORDERED)}
    assert list(labels) == ORDERED and labels[ORDERED[0]] == 0 and labels["A"] == 28

    calls = dict(mock_output_model.calls)
    assert calls["update_weights"]["weights_filename"] == str(model_files["onnx"])
    assert calls["update_weights"]["auto_delete_file"] is False
    meta = calls["set_all_metadata"]["metadata"]
    assert json.loads(meta["metrics"]["value"]) == metrics
    assert json.loads(meta["params"]["value"]) == {"epochs": 3, "weights": None}
    assert meta["dataset_id"]["value"] == "ds-42" and meta["version"]["value"] == "2"
    assert json.loads(meta["baseline"]["value"]) == json.loads(model_files["baseline"].read_text())
    assert MockModel.query_calls[0]["model_name"] == "asl"
    assert MockModel.downloads == 0  # the next version number comes from metadata only

    assert record.id == mock_output_model.id and record.version == 2
    assert record.task_id == "mock-task-7" and record.backend == "clearml"
    assert record.metrics == metrics and record.dataset_id == "ds-42"


def test_register_uses_the_running_task_and_refuses_without_one(mock_clearml, model_files) -> None:
    registry = get_registry("clearml")
    args = ("asl", str(model_files["onnx"]), str(model_files["classes"]), {}, {})
    with pytest.raises(RuntimeError, match="needs a running task"):
        registry.register(*args)
    assert MockOutputModel.created == []
    MockTask.running = MockTask("mock-current")
    record = registry.register(*args)
    assert MockOutputModel.created[0].init_kwargs["task"] is MockTask.running
    assert record.task_id == "mock-current" and record.version == 1


def test_promote_moves_the_production_tag_and_publishes(mock_clearml, model_files) -> None:
    old = _stored("m-old", "asl", 1, model_files["onnx"], tags=["v1", PRODUCTION_TAG])
    new = _stored("m-new", "asl", 2, model_files["onnx"], tags=["v2"])
    _stored("m-other", "other", 1, model_files["onnx"], tags=[PRODUCTION_TAG])
    registry = get_registry("clearml")
    assert registry.production("asl").id == "m-old"

    record = registry.promote("m-new")

    assert PRODUCTION_TAG in new.tags and PRODUCTION_TAG not in old.tags
    assert MockModel.store["m-other"].tags == [PRODUCTION_TAG]  # another name is untouched
    assert new.publish_calls == 1 and old.publish_calls == 0
    assert {"model_name": "asl", "tags": [PRODUCTION_TAG], "only_published": False} in (
        MockModel.query_calls
    )
    assert record.id == "m-new" and record.published and PRODUCTION_TAG in record.tags
    # the record is usable by serving: labels back as classes.txt in index order
    assert Path(record.classes_path).read_text().splitlines() == ORDERED
    assert record.onnx_path == str(model_files["onnx"]) and record.version == 2
    assert registry.production("asl").id == "m-new"
    assert [r.version for r in registry.list("asl")] == [1, 2]

    registry.promote("m-new")  # promoting again: no second publish, one production tag
    assert new.publish_calls == 1 and new.tags.count(PRODUCTION_TAG) == 1


def test_get_unknown_model_is_a_clear_error(mock_clearml) -> None:
    with pytest.raises(ModelNotFoundError, match="no ClearML model with id nope"):
        get_registry("clearml").get("nope")

"""The ClearML model registry through clearml 2.1.12's own Model / OutputModel code.

No ClearML server can run here, so the lowest SDK layer is replaced: ``MockSession`` is
``create_autospec`` of clearml's ``Session`` (a wrong call signature fails), answered by
``MockClearMLServer``, an in-memory model table that understands only the requests the registry
needs and refuses any other. Everything above it is the real SDK: request building, tag
handling, the weights upload (to a ``file://`` destination, a real copy) and the download.
``MockTask`` is ``create_autospec`` of ``clearml.Task``; the files are real.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import pytest
from asl_testkit.tiny_models import contract_onnx
from clearml import OutputModel, Task
from clearml.backend_api import Session
from clearml.backend_api.services import models, projects, tasks
from clearml.backend_api.session.callresult import CallResult
from clearml.backend_api.session.response import ResponseMeta
from clearml.backend_interface.base import InterfaceBase
from clearml.backend_interface.model import Model as BackendModel

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.hashing import sha256_file
from asl_recognition.registry import (
    PRODUCTION_TAG,
    ModelIdError,
    ModelIntegrityError,
    ModelNotFoundError,
    NewModel,
    get_registry,
)
from asl_recognition.registry.clearml_registry import upload_destination

# Not sorted on purpose: label indices must follow classes.txt order, not alphabetical order.
ORDERED = list(reversed(CLASSES))
FILES_HOST = "http://files.mock-server.invalid:8081"
PROJECTS = {"ASL": "mock-project-asl", "Someone else": "mock-project-other"}
UNKNOWN = "404" * 10 + "40"  # 32 hex digits no mock model has


class MockClearMLServer:
    """The ClearML API server's model table, answering requests the SDK sends a MockSession.

    Models live in projects (``PROJECTS``); ``models.get_all`` filters by the ``project`` ids it
    is given, as the server does, and a ``projects.get_all`` by name finds the id.
    """

    HANDLED = ("Create", "GetById", "Edit", "GetAll", "SetReady", "AddOrUpdateMetadata")

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.sent: list[Any] = []
        self._ids = itertools.count(1)
        self._clock = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.session = mock.create_autospec(Session, instance=True)  # MockSession
        self.session.send.side_effect = self.answer

    def add(self, name: str, tags: list[str], uri: str, **fields: Any) -> str:
        """A model as the registry leaves one: its weights' sha256 in the metadata (read from
        a ``file://`` uri that exists) unless ``metadata`` names one."""
        model_id = f"{next(self._ids):032x}"  # ClearML ids: 32 hex digits
        self._clock += timedelta(seconds=1)
        weights = Path(urlparse(uri).path) if uri.startswith("file://") else None
        if weights is not None and weights.is_file():
            fields["metadata"] = {
                **_meta(onnx_sha256=sha256_file(weights)),
                **(fields.get("metadata") or {}),
            }
        self.models[model_id] = {
            "id": model_id,
            "name": name,
            "tags": list(tags),
            "system_tags": [],
            "labels": {c: i for i, c in enumerate(ORDERED)},
            "uri": uri,
            "ready": False,
            "metadata": {},
            "task": "mock-task-0",
            "framework": "ONNX",
            "comment": "",
            "created": self._clock,
            "parent": None,
            "project": PROJECTS["ASL"],
            **fields,
        }
        return model_id

    def edits(self, model_id: str) -> list[dict[str, Any]]:
        """Every models.edit body sent for ``model_id``, as it would go on the wire."""
        return [
            r.to_dict()
            for r in self.sent
            if isinstance(r, models.EditRequest) and r.model == model_id
        ]

    @staticmethod
    def _ok(response: Any) -> CallResult:
        return CallResult(meta=ResponseMeta.from_raw_data(status_code=200), response=response)

    def answer(self, req: Any, *_args: Any, **_kwargs: Any) -> CallResult:
        self.sent.append(req)
        kind = type(req).__name__.removesuffix("Request")
        if isinstance(req, tasks.AddOrUpdateModelRequest):
            return self._ok(tasks.AddOrUpdateModelResponse(updated=1))
        if isinstance(req, projects.GetAllRequest):
            found = [
                projects.ProjectsGetAllResponseSingle(id=pid, name=name)
                for name, pid in PROJECTS.items()
                if re.match(req.name, name)
            ]
            return self._ok(projects.GetAllResponse(projects=found))
        if kind not in self.HANDLED or type(req).__module__ != models.EditRequest.__module__:
            raise AssertionError(f"MockClearMLServer: unexpected request {type(req)}")
        if kind == "Create":
            model_id = self.add(
                req.name, [], req.uri, labels=req.labels or {}, project=req.project
            )
            return self._ok(models.CreateResponse(id=model_id, created=True))
        if kind == "GetAll":
            return self._ok(models.GetAllResponse(models=self._query(req)))
        model = self.models.get(req.model)
        if model is None:
            meta = ResponseMeta.from_raw_data(
                status_code=400, text=f"Invalid model id {req.model}"
            )
            return CallResult(meta=meta)
        if kind == "GetById":
            return self._ok(models.GetByIdResponse(model=models.Model(**model)))
        if kind == "SetReady":
            model["ready"] = True
            return self._ok(models.SetReadyResponse(updated=1))
        if kind == "AddOrUpdateMetadata":
            items = {m.key: {"key": m.key, "type": m.type, "value": m.value} for m in req.metadata}
            model["metadata"] = items if req.replace_metadata else {**model["metadata"], **items}
            return self._ok(models.AddOrUpdateMetadataResponse(updated=1))
        for key, value in req.to_dict().items():  # Edit: the fields the request carries
            if key in model and key != "id":
                model[key] = value
        return self._ok(models.EditResponse(updated=1))

    def _query(self, req: Any) -> list[Any]:
        if req.page:
            return []
        wanted = [t for t in req.tags or [] if not t.startswith("-")]
        found = [
            m
            for m in self.models.values()
            if (req.name is None or re.match(req.name, m["name"]))
            and (not wanted or set(wanted) & set(m["tags"]))
            and (not req.ready or m["ready"])
            and (not req.project or m["project"] in req.project)
        ]
        found.sort(key=lambda m: m["created"], reverse=True)
        return [models.Model(id=m["id"], created=m["created"], system_tags=[]) for m in found]


@pytest.fixture()
def server(tmp_path, monkeypatch) -> MockClearMLServer:
    """Online SDK state pointing at a MockClearMLServer; restored after the test."""
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(tmp_path / "clearml_cache"))
    monkeypatch.setenv("CLEARML_FILES_HOST", FILES_HOST)
    monkeypatch.delenv("ASL_OUTPUT_URI", raising=False)
    mock_server = MockClearMLServer()
    monkeypatch.setattr(InterfaceBase, "_offline_mode", False)
    monkeypatch.setattr(Session, "_offline_mode", False)
    monkeypatch.setattr(Session, "_sessions_created", 1)  # no real Session is ever built
    monkeypatch.setattr(Session, "api_version", "2.23")  # what a current server reports
    monkeypatch.setattr(InterfaceBase, "_default_session", mock_server.session)
    monkeypatch.setattr(BackendModel, "_local_model_to_id_uri", {})
    return mock_server


def make_mock_task(server: MockClearMLServer, tmp_path: Path, output_uri: str | None = None):
    """MockTask: an autospec of clearml.Task with the state OutputModel reads from its task."""
    mock_task = mock.create_autospec(Task, instance=True)
    mock_task.id, mock_task.name, mock_task.project = "mock-task-1", "train", PROJECTS["ASL"]
    mock_task.output_uri = mock_task.storage_uri = output_uri
    mock_task.status, mock_task.TaskStatusEnum = "in_progress", Task.TaskStatusEnum
    mock_task.input_models_id = {}
    mock_task.is_offline.return_value = False
    mock_task.get_labels_enumeration.return_value = {}
    mock_task._get_model_config_text.return_value = ""
    mock_task.get_last_iteration.return_value = 0
    mock_task._get_output_model.side_effect = lambda upload_required=True, model_id=None: (
        BackendModel(
            upload_storage_uri=output_uri,
            cache_dir=str(tmp_path / "model_cache"),
            model_id=model_id,
            upload_storage_suffix="ASL/train.mock-task-1/models",
            session=server.session,
        )
    )
    return mock_task


def new_model(files: dict[str, Path], **fields: Any) -> NewModel:
    """What training registers, from the ``model_files`` fixture (``fields`` override)."""
    return NewModel(
        name="asl", onnx_path=str(files["onnx"]), classes_path=str(files["classes"]), **fields
    )


@pytest.fixture()
def model_files(tmp_path) -> dict[str, Path]:
    src = tmp_path / "run"
    src.mkdir()
    onnx = src / "model.onnx"
    onnx.write_bytes(b"\x08\x07mock-onnx-bytes" * 64)
    classes = src / "classes.txt"
    write_class_file(str(classes), ORDERED)
    baseline = src / "baseline.json"
    baseline.write_text(json.dumps({"mean_confidence": 0.8, "classes": ORDERED}))
    return {"onnx": onnx, "classes": classes, "baseline": baseline}


def test_register_uploads_the_weights_and_another_machine_downloads_them(
    server, model_files, tmp_path, monkeypatch
) -> None:
    bucket = tmp_path / "bucket"
    monkeypatch.setenv("ASL_OUTPUT_URI", bucket.as_uri())
    mock_task = make_mock_task(server, tmp_path)
    onnx_bytes = model_files["onnx"].read_bytes()
    with mock.patch.object(
        OutputModel, "update_weights", autospec=True, side_effect=OutputModel.update_weights
    ) as spy:
        record = get_registry("clearml").register(
            new_model(
                model_files,
                metrics={"test_accuracy": 0.93},
                params={"epochs": 3},
                dataset_id="ds-42",
                baseline_path=str(model_files["baseline"]),
            ),
            task=mock_task,
        )
    assert spy.call_args.kwargs["upload_uri"] == bucket.as_uri()
    stored = server.models[record.id]
    [uploaded] = (bucket / "ASL/train.mock-task-1/models").glob("model.*.onnx")
    assert uploaded.read_bytes() == onnx_bytes  # a real copy at the destination
    assert stored["uri"] == record.onnx_uri and stored["uri"].endswith(str(uploaded))
    assert stored["labels"] == {c: i for i, c in enumerate(ORDERED)}
    assert stored["tags"] == ["v1"] and stored["name"] == "asl"
    assert stored["metadata"]["onnx_sha256"]["value"] == sha256_file(uploaded)
    assert stored["metadata"]["dataset_id"]["value"] == "ds-42"

    # Another machine: the training run's files are gone, a fresh workspace reads by id.
    for path in model_files.values():
        path.unlink()
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "other_machine"))
    read = get_registry("clearml").get(record.id)
    assert Path(read.onnx_path).read_bytes() == onnx_bytes
    assert Path(read.classes_path).read_text().splitlines() == ORDERED
    assert json.loads(Path(read.baseline_path).read_text())["classes"] == ORDERED
    assert read.onnx_uri == record.onnx_uri and read.version == 1
    assert read.metrics == {"test_accuracy": 0.93} and read.dataset_id == "ds-42"


def test_register_defaults_to_the_files_server(server, model_files, tmp_path) -> None:
    """Without ASL_OUTPUT_URI the SDK is told to upload to the files server (an http upload
    cannot run here: the weights call itself is the autospec MockOutputModel)."""
    mock_task = make_mock_task(server, tmp_path)
    assert upload_destination(mock_task) == FILES_HOST
    mock_task.output_uri = "s3://project-default/models"
    assert upload_destination(mock_task) == "s3://project-default/models"
    mock_task.output_uri = None
    uploaded = f"{FILES_HOST}/ASL/train.mock-task-1/models/model.onnx"
    with mock.patch("clearml.OutputModel", autospec=True) as mock_output_model:
        instance = mock_output_model.return_value
        instance.update_weights.return_value, instance.id = uploaded, "mock-model-9"
        record = get_registry("clearml").register(new_model(model_files), task=mock_task)
    instance.update_weights.assert_called_once_with(
        weights_filename=str(model_files["onnx"]),
        upload_uri=FILES_HOST,
        target_filename=mock.ANY,
        auto_delete_file=False,
        async_enable=False,
    )
    assert record.onnx_uri == uploaded and record.id == "mock-model-9"


def test_register_refuses_weights_that_were_only_registered_locally(
    server, model_files, tmp_path
) -> None:
    mock_task = make_mock_task(server, tmp_path)
    with mock.patch("clearml.OutputModel", autospec=True) as mock_output_model:
        instance = mock_output_model.return_value
        instance.update_weights.return_value = str(model_files["onnx"])  # no upload happened
        with pytest.raises(RuntimeError, match="without uploading"):
            get_registry("clearml").register(new_model(model_files), mock_task)
    instance.set_all_metadata.assert_not_called()


def test_bad_output_uri_is_a_one_line_error(server, model_files, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ASL_OUTPUT_URI", "relative/models")
    with pytest.raises(ValueError, match="ASL_OUTPUT_URI='relative/models' must be a URL"):
        get_registry("clearml").register(new_model(model_files), make_mock_task(server, tmp_path))
    assert server.sent == []  # refused before anything reached the server


def test_register_uses_the_running_task_and_refuses_without_one(
    server, model_files, tmp_path, monkeypatch
) -> None:
    registry = get_registry("clearml")
    args = (new_model(model_files),)
    monkeypatch.setattr(Task, "current_task", mock.create_autospec(Task.current_task))
    Task.current_task.return_value = None
    with pytest.raises(RuntimeError, match="needs a running task"):
        registry.register(*args)
    assert server.sent == []
    monkeypatch.setenv("ASL_OUTPUT_URI", (tmp_path / "bucket").as_uri())
    Task.current_task.return_value = make_mock_task(server, tmp_path)
    record = registry.register(*args)
    assert record.task_id == "mock-task-1" and record.version == 1


def test_a_model_registered_as_a_local_path_is_a_clear_error(server, tmp_path) -> None:
    """What the old registry produced: the training machine's path, unreadable elsewhere."""
    gone = tmp_path / "training-machine" / "model.onnx"
    model_id = server.add("asl", ["v1"], str(gone))
    with pytest.raises(ModelNotFoundError, match=f"model {model_id}: weights at .*model.onnx"):
        get_registry("clearml").get(model_id)


def test_a_download_that_fails_its_sha256_is_refused(server, tmp_path) -> None:
    weights = tmp_path / "bucket" / "model.onnx"
    weights.parent.mkdir()
    weights.write_bytes(b"truncated")
    meta = {"onnx_sha256": {"key": "onnx_sha256", "type": "str", "value": "0" * 64}}
    model_id = server.add("asl", ["v1"], weights.as_uri(), metadata=meta)
    with pytest.raises(ModelNotFoundError, match="fail sha256"):
        get_registry("clearml").get(model_id)


def test_a_label_enumeration_with_gaps_is_refused(server, tmp_path) -> None:
    weights = tmp_path / "model.onnx"
    weights.write_bytes(b"w")
    model_id = server.add("asl", [], weights.as_uri(), labels={"A": 0, "B": 2})
    with pytest.raises(ModelNotFoundError, match="not indices 0..n-1"):
        get_registry("clearml").get(model_id)


def test_promote_really_removes_the_old_production_tag(server, tmp_path) -> None:
    """The old model's ONLY tag is production: ``Model.tags = []`` would send its old tags."""
    weights = tmp_path / "model.onnx"
    weights.write_bytes(b"w")
    old = server.add("asl", [PRODUCTION_TAG], weights.as_uri(), ready=True)
    new = server.add("asl", ["v2"], weights.as_uri())
    other = server.add("other", [PRODUCTION_TAG], weights.as_uri(), ready=True)
    registry = get_registry("clearml")
    assert registry.production("asl").id == old

    record = registry.promote(new)

    assert [e["tags"] for e in server.edits(old)] == [[]]  # the request that goes out
    assert server.models[old]["tags"] == []
    assert server.models[new]["tags"] == ["v2", PRODUCTION_TAG] and server.models[new]["ready"]
    assert server.models[other]["tags"] == [PRODUCTION_TAG]  # another name is untouched
    assert record.id == new and record.published and PRODUCTION_TAG in record.tags
    assert registry.production("asl").id == new

    sent = len(server.sent)
    registry.promote(new)  # again: no second publish, no tag edit
    repeat = server.sent[sent:]
    assert not [r for r in repeat if isinstance(r, (models.EditRequest, models.SetReadyRequest))]
    assert server.models[new]["tags"].count(PRODUCTION_TAG) == 1


def test_get_unknown_model_is_a_clear_error(server) -> None:
    with pytest.raises(ModelNotFoundError, match=f"no ClearML model with id {UNKNOWN}"):
        get_registry("clearml").get(UNKNOWN)


def test_a_model_id_that_is_not_an_id_never_reaches_the_server(server) -> None:
    """#19.17: ``../../x`` is refused by its format, before any request."""
    for bad in ("nope", "../../x", "ABCDEF01" * 4, UNKNOWN + "0"):
        with pytest.raises(ModelIdError, match="is not a model id"):
            get_registry("clearml").get(bad)
    assert server.sent == []


def test_a_variant_records_its_parent_natively(server, model_files, tmp_path, monkeypatch) -> None:
    """The fp32 model becomes the variant's ClearML parent through one models.edit carrying
    only ``parent``; another machine reads it back; an unknown parent is refused first."""
    monkeypatch.setenv("ASL_OUTPUT_URI", (tmp_path / "bucket").as_uri())
    registry = get_registry("clearml")
    checkpoint = tmp_path / "best.pt"
    parent = registry.register(
        new_model(model_files, checkpoint_path=str(checkpoint)), make_mock_task(server, tmp_path)
    )
    assert [e for e in server.edits(parent.id) if "parent" in e] == []
    child = registry.register(
        new_model(model_files, parent_id=parent.id, tags=("int8",)),
        make_mock_task(server, tmp_path),
    )
    sent_edit = models.EditRequest(model=child.id, parent=parent.id).to_dict()
    assert sent_edit in server.edits(child.id)  # exactly the request, no other field
    assert server.models[child.id]["parent"] == parent.id
    assert server.models[child.id]["tags"] == ["v2", "int8"]
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "other_machine"))
    assert registry.get(child.id).parent_id == parent.id
    assert registry.get(parent.id).parent_id is None
    assert registry.get(parent.id).checkpoint_path == str(checkpoint)

    sent = len(server.sent)
    with pytest.raises(ModelNotFoundError, match=f"no ClearML model with id {UNKNOWN}"):
        registry.register(
            new_model(model_files, parent_id=UNKNOWN), make_mock_task(server, tmp_path)
        )
    assert not [r for r in server.sent[sent:] if not isinstance(r, models.GetByIdRequest)]


def _meta(**values: Any) -> dict[str, dict[str, str]]:
    """Model metadata as the registry writes it (``_metadata``): text values by key."""
    return {k: {"key": k, "type": "str", "value": v} for k, v in values.items()}


def test_the_registry_never_reads_or_edits_another_projects_models(
    server, model_files, tmp_path, monkeypatch
) -> None:
    """``Model.query_models`` without ``project_name`` searches every project
    (clearml/model.py, ``Model.query_models``): another project's ``asl`` v7 in production
    would set the next version, be the production model and lose its tag on a promotion."""
    weights = tmp_path / "model.onnx"
    weights.write_bytes(b"w")
    foreign = server.add(
        "asl",
        ["v7", PRODUCTION_TAG],
        weights.as_uri(),
        ready=True,
        metadata=_meta(version="7"),
        project=PROJECTS["Someone else"],
    )
    registry = get_registry("clearml")
    assert registry.production("asl") is None and registry.list("asl") == []

    monkeypatch.setenv("ASL_OUTPUT_URI", (tmp_path / "bucket").as_uri())
    record = registry.register(new_model(model_files), make_mock_task(server, tmp_path))
    assert record.version == 1 and server.models[record.id]["project"] == PROJECTS["ASL"]
    registry.promote(record.id)

    assert registry.production("asl").id == record.id
    assert server.models[foreign]["tags"] == ["v7", PRODUCTION_TAG]  # not demoted
    assert server.edits(foreign) == []
    queries = [r for r in server.sent if isinstance(r, models.GetAllRequest) and not r.page]
    assert queries and all(r.project == [PROJECTS["ASL"]] for r in queries)


def test_output_uri_none_registers_the_weights_where_they_are(
    server, model_files, tmp_path, monkeypatch, capsys
) -> None:
    """``ASL_OUTPUT_URI=none`` (the README: weights stay local, one machine) used to raise
    "must be a URL" on every registry call; now nothing is uploaded and it is said once."""
    monkeypatch.setenv("ASL_OUTPUT_URI", "none")
    monkeypatch.setattr("asl_recognition.clearml_env._said_local", False)
    mock_task = make_mock_task(server, tmp_path, output_uri=(tmp_path / "bucket").as_uri())
    assert upload_destination(mock_task) is None
    registry = get_registry("clearml")
    with mock.patch.object(
        OutputModel, "update_weights", autospec=True, side_effect=OutputModel.update_weights
    ) as spy:
        first = registry.register(new_model(model_files), mock_task)
        second = registry.register(new_model(model_files), mock_task)
    local = model_files["onnx"].resolve().as_uri()
    assert spy.call_args.kwargs == {"register_uri": local}
    assert server.models[first.id]["uri"] == local and first.onnx_uri == local
    assert (first.version, second.version) == (1, 2)
    assert not (tmp_path / "bucket").exists()  # nothing was uploaded, even to the task's uri
    assert Path(registry.get(first.id).onnx_path) == model_files["onnx"].resolve()
    notices = [line for line in capsys.readouterr().err.splitlines() if "ASL_OUTPUT_URI" in line]
    assert notices == [
        "ASL_OUTPUT_URI=none: model weights stay on this machine (registered as local paths); "
        "datasets and artifacts still go to the files server"
    ]


def test_int8_variant_downloads_only_the_variants_weights(server, tmp_path) -> None:
    """select_best's INT8 lookup read every ``asl`` model through ``registry.list``, which
    downloads each one's weights; it now reads metadata and downloads only the variant."""
    from clearml import Model

    from asl_recognition.pipeline.selection import int8_variant

    def weights(name: str) -> str:
        path = tmp_path / "bucket" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name.encode())
        return path.as_uri()

    gone = (tmp_path / "deleted-run" / "model.onnx").as_uri()  # an old model, weights gone
    scores = json.dumps({"test_accuracy": 0.9})
    parent = server.add("asl", ["v2"], weights("fp32.onnx"), metadata=_meta(metrics=scores))
    for version in range(3, 9):
        server.add("asl", [f"v{version}"], gone, metadata=_meta(version=str(version)))
    int8 = json.dumps({"variant": "int8"})
    servable = contract_onnx(tmp_path / "bucket" / "int8.onnx").as_uri()  # checked servable
    variant = server.add(
        "asl",
        ["v9", "int8"],
        servable,
        parent=parent,
        metadata=_meta(version="9", params=int8, metrics=scores),
    )
    server.add("asl", ["v10", "int8"], gone, parent="another-fp32", metadata=_meta(params=int8))
    registry = get_registry("clearml")
    parent_record = registry.get(parent)

    with mock.patch.object(
        Model, "get_local_copy", autospec=True, side_effect=Model.get_local_copy
    ) as spy:
        found = int8_variant(registry, parent_record, tolerance=0.01)

    assert found is not None and found.id == variant
    assert [c.args[0].id for c in spy.call_args_list] == [variant]


def test_two_promotions_at_once_leave_the_later_one_in_production(server, tmp_path) -> None:
    """Both tagged their model, then both read the tagged list before either demoted: each
    demoted the other's model and none was left, so the next select_best promoted anything
    with 'no production model yet'. The server has no lock; a stamp orders promotions. The
    barrier only forces that timing (two threads, the real SDK, only the session faked)."""
    import threading

    from asl_recognition.registry.clearml_registry import ClearMLModelRegistry

    weights = tmp_path / "model.onnx"
    weights.write_bytes(b"w")
    old = server.add("asl", ["v1", PRODUCTION_TAG], weights.as_uri(), ready=True)
    a, b = (server.add("asl", [f"v{v}"], weights.as_uri()) for v in (2, 3))
    both_tagged = threading.Barrier(2, timeout=30)
    query = ClearMLModelRegistry._query

    def in_step(self, name, tags=None):
        if tags == [PRODUCTION_TAG] and threading.current_thread().name == "promotion":
            both_tagged.wait()
            found = query(self, name, tags)
            both_tagged.wait()
            return found
        return query(self, name, tags)

    errors: list[Exception] = []

    def promote(model_id: str) -> None:
        try:
            get_registry("clearml").promote(model_id)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with mock.patch.object(ClearMLModelRegistry, "_query", in_step):
        threads = [threading.Thread(target=promote, args=(m,), name="promotion") for m in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors
    tagged = [m for m in (old, a, b) if PRODUCTION_TAG in server.models[m]["tags"]]
    assert len(tagged) == 1 and tagged[0] in (a, b), tagged
    assert get_registry("clearml").production("asl").id == tagged[0]


def test_select_best_compares_with_a_production_model_whose_weights_are_gone(server, tmp_path):
    """Reading production downloaded its weights: deleted from the file server, they made every
    later selection refuse, though only its metadata's metrics are compared."""
    from asl_recognition.pipeline.options import SelectBestOptions
    from asl_recognition.pipeline.selection import select_best

    weights = contract_onnx(tmp_path / "model.onnx")
    gone = (tmp_path / "deleted.onnx").as_uri()
    old = server.add("asl", ["v1", PRODUCTION_TAG], gone, ready=True,
                     metadata=_meta(metrics='{"val_macro_f1": 0.5}'))  # fmt: skip
    new = server.add("asl", ["v2"], weights.as_uri(),
                     metadata=_meta(metrics='{"val_macro_f1": 0.95}'))  # fmt: skip
    decision = select_best(get_registry("clearml"), SelectBestOptions(model_id=new))
    assert decision.promoted and decision.previous_value == 0.5, decision.reason
    assert server.models[old]["tags"] == ["v1"]


def test_a_refused_metadata_write_is_no_silent_registration(
    server, model_files, tmp_path, monkeypatch
) -> None:
    """``set_all_metadata`` returns False for a refused write (clearml/model.py): the model
    was registered without version, metrics or sha256, its weights never checked again."""
    monkeypatch.setenv("ASL_OUTPUT_URI", (tmp_path / "bucket").as_uri())
    answer = server.answer

    def refuse_metadata(req: Any, *args: Any, **kwargs: Any) -> CallResult:
        if isinstance(req, models.AddOrUpdateMetadataRequest):
            server.sent.append(req)
            return CallResult(meta=ResponseMeta.from_raw_data(status_code=400, text="refused"))
        if isinstance(req, models.ArchiveManyRequest):
            server.sent.append(req)
            for model_id in req.ids:
                server.models[model_id]["system_tags"] = ["archived"]
            return server._ok(models.ArchiveManyResponse(succeeded=[], failed=[]))
        return answer(req, *args, **kwargs)

    server.session.send.side_effect = refuse_metadata
    with pytest.raises(RuntimeError, match="refused the metadata of model .* archiving was asked"):
        get_registry("clearml").register(new_model(model_files), make_mock_task(server, tmp_path))
    (made,) = server.models.values()
    assert made["system_tags"] == ["archived"]


def test_a_promotion_from_a_clock_behind_still_wins(server, tmp_path, monkeypatch) -> None:
    """The stamp was the client's clock: a model promoted by an agent whose clock ran ten
    minutes fast stayed production after a later promotion elsewhere, which select_best had
    reported as done."""
    import time as clock

    weights = tmp_path / "model.onnx"
    weights.write_bytes(b"w")
    a, b = (server.add("asl", [f"v{v}"], weights.as_uri()) for v in (1, 2))
    registry = get_registry("clearml")
    now = clock.time()
    monkeypatch.setattr(clock, "time", lambda: now + 600)  # the fast agent
    registry.promote(b)
    monkeypatch.setattr(clock, "time", lambda: now + 60)  # a minute later, a right clock
    registry.promote(a)
    assert [m for m in (a, b) if PRODUCTION_TAG in server.models[m]["tags"]] == [a]
    assert registry.production("asl").id == a


def test_production_scores_carry_the_class_list_without_the_weights(server, tmp_path) -> None:
    """select_best's log draws the previous model's confusion matrix with its classes."""
    gone = (tmp_path / "deleted.onnx").as_uri()
    server.add("asl", ["v1", PRODUCTION_TAG], gone, ready=True)
    scores = get_registry("clearml").production_scores("asl")
    assert Path(scores.classes_path).read_text().splitlines() == ORDERED


def test_weights_without_a_recorded_sha256_are_refused(server, tmp_path) -> None:
    """They were downloaded unchecked; the local registry refuses a record without hashes."""
    weights = tmp_path / "model.onnx"
    weights.write_bytes(b"w")
    model_id = server.add("asl", ["v1"], weights.as_uri(), metadata={})
    server.models[model_id]["metadata"] = {}
    with pytest.raises(ModelIntegrityError, match="no sha256 of its weights was recorded"):
        get_registry("clearml").get(model_id)


def test_a_rerun_of_the_same_task_keeps_the_production_weights(
    server, model_files, tmp_path, monkeypatch
) -> None:
    """Reset + Enqueue in the web UI runs a task again under the same id, and a reset keeps a
    published model (clearml-server ``cleanup_task``). The SDK uploads to
    ``<project>/<task>.<id>/models/<file name>``, so the second run's ``model.onnx`` had
    overwritten the production model's weights: every later download failed its sha256."""
    monkeypatch.setenv("ASL_OUTPUT_URI", (tmp_path / "bucket").as_uri())
    registry = get_registry("clearml")
    first_bytes = model_files["onnx"].read_bytes()
    first = registry.register(new_model(model_files), task=make_mock_task(server, tmp_path))
    registry.promote(first.id)

    model_files["onnx"].write_bytes(b"\x08\x07retrained-bytes" * 64)  # the run after a reset
    second = registry.register(new_model(model_files), task=make_mock_task(server, tmp_path))
    assert second.onnx_uri != first.onnx_uri  # each registration its own file

    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "other_machine"))
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(tmp_path / "other_machine_cache"))
    production = get_registry("clearml").production("asl")
    assert production.id == first.id
    assert Path(production.onnx_path).read_bytes() == first_bytes

"""The ClearML dataset store against clearml 2.1.12's real Dataset signatures and metadata code.

No ClearML server can run here: ``MockDataset`` is ``create_autospec`` of ``clearml.Dataset``
(a wrong keyword or a removed method fails), ``MockTask`` of ``clearml.Task`` and
``MockArtifact`` of its ``Artifact``. ``set_metadata`` / ``get_metadata`` run the SDK's own
code on those mocks, so what reaches the dataset's task is what the SDK would send.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from clearml import Dataset, Task
from clearml.binding.artifacts import Artifact

from asl_recognition.store import DatasetNotFoundError, get_store
from asl_recognition.store.base import DatasetIntegrityError
from asl_recognition.store.clearml_store import RECORD_ARTIFACT, ClearMLDatasetStore

UI_SKIP_LINE = "Displaying metadata in the UI is only supported for pandas Dataframes"


def make_mock_dataset(dataset_id: str, artifacts: dict[str, Any] | None = None):
    """A MockDataset instance whose metadata methods are the SDK's, over a MockTask."""
    mock_ds = mock.create_autospec(Dataset, instance=True)
    mock_ds.id, mock_ds.name, mock_ds.version, mock_ds.tags = dataset_id, "ASL", "1.0.2", ["t"]
    mock_ds.get_dependency_graph.return_value = {dataset_id: ["raw-1"], "raw-1": []}
    mock_ds._Dataset__data_entry_name_prefix = Dataset._Dataset__data_entry_name_prefix
    mock_ds._task = mock.create_autospec(Task, instance=True)  # MockTask
    mock_ds._task.artifacts = dict(artifacts or {})
    mock_ds.set_metadata.side_effect = lambda *a, **k: Dataset.set_metadata(mock_ds, *a, **k)
    mock_ds.get_metadata.side_effect = lambda *a, **k: Dataset.get_metadata(mock_ds, *a, **k)
    return mock_ds


def mock_artifact(value: Any):
    artifact = mock.create_autospec(Artifact, instance=True)  # MockArtifact
    artifact.get.return_value = value
    return artifact


@pytest.fixture()
def mock_dataset_cls(monkeypatch):
    """``clearml.Dataset`` replaced by MockDataset (class-level autospec)."""
    import clearml

    cls = mock.create_autospec(Dataset)
    monkeypatch.setattr(clearml, "Dataset", cls)
    monkeypatch.delenv("ASL_OUTPUT_URI", raising=False)
    return cls


def _files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for rel, data in (("train/A/a.jpg", b"a" * 10), ("test/B/b.jpg", b"b" * 20)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
        out[rel] = tmp_path / rel
    return out


def test_create_keeps_the_record_as_metadata_without_the_ui_warning(
    mock_dataset_cls, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ASL_OUTPUT_URI", "s3://bucket/asl")
    mock_ds = make_mock_dataset("ds-new")
    mock_dataset_cls.create.return_value = mock_ds
    staged: list[str] = []
    stage: list[Path] = []

    def mock_add_files(path, **_):
        stage.append(Path(path))
        staged.extend(
            p.relative_to(path).as_posix() for p in sorted(Path(path).rglob("*")) if p.is_file()
        )

    mock_ds.add_files.side_effect = mock_add_files
    # the SDK uploads the preview images from the staged files in the background
    flushed_while_staged: list[bool] = []
    mock_ds.get_logger.return_value.flush.side_effect = lambda wait=False: (
        flushed_while_staged.append(wait and stage[0].is_dir())
    )

    version = get_store("clearml").create(
        "ASL", _files(tmp_path), parents=["raw-1"], metadata={"k": 1}, tags=["t"], description="d"
    )

    mock_dataset_cls.create.assert_called_once_with(
        dataset_name="ASL",
        dataset_project="ASL/datasets",
        parent_datasets=["raw-1"],
        dataset_tags=["t"],
        output_uri="s3://bucket/asl",
        description="d",
    )
    mock_ds.remove_files.assert_called_once_with(dataset_path="*", recursive=True)
    assert sorted(staged) == ["test/B/b.jpg", "train/A/a.jpg"]  # the images only, no record
    record = mock_ds._task.upload_artifact.call_args.kwargs["artifact_object"]
    mock_ds._task.upload_artifact.assert_called_once_with(
        name=RECORD_ARTIFACT, artifact_object=record
    )
    assert record["metadata"] == {"k": 1}
    assert {f["path"]: f["size"] for f in record["files"]} == {
        "train/A/a.jpg": 10,
        "test/B/b.jpg": 20,
    }
    mock_ds._task.get_logger.return_value.report_text.assert_not_called()  # no "Skipping!" line
    names = [c[0] for c in mock_ds.mock_calls if c[0] in ("upload", "set_metadata", "finalize")]
    assert names == ["upload", "set_metadata", "finalize"]  # the record lands before finalize
    assert flushed_while_staged == [True]  # the staging folder outlives the preview uploads
    assert not stage[0].exists()
    assert version.id == "ds-new" and version.parents == ["raw-1"]
    assert [f.path for f in version.files] == ["test/B/b.jpg", "train/A/a.jpg"]


def test_the_record_hashes_the_bytes_uploaded_when_a_file_changes_meanwhile(
    mock_dataset_cls, tmp_path
) -> None:
    """A writer rewrites a file while the version is being published: the record must hash
    what was uploaded, or every later checkout of it is refused; and a file that is no longer
    what the caller checked (``expected``) is refused before the server sees a dataset."""
    files = _files(tmp_path)
    checked = {rel: hashlib.sha256(path.read_bytes()).hexdigest() for rel, path in files.items()}
    mock_ds = make_mock_dataset("ds-new")
    uploaded: dict[str, tuple[str, int]] = {}

    def mock_create(**_):
        files["train/A/a.jpg"].write_bytes(b"rewritten")  # the other writer, meanwhile
        return mock_ds

    def mock_add_files(path, **_):
        for rel in files:
            data = (Path(path) / rel).read_bytes()
            uploaded[rel] = (hashlib.sha256(data).hexdigest(), len(data))

    mock_dataset_cls.create.side_effect = mock_create
    mock_ds.add_files.side_effect = mock_add_files

    version = get_store("clearml").create("ASL", files)

    assert {f.path: (f.sha256, f.size) for f in version.files} == uploaded
    mock_dataset_cls.create.reset_mock()
    with pytest.raises(DatasetIntegrityError, match="train/A/a.jpg changed after it was checked"):
        get_store("clearml").create("ASL", files, expected=checked)  # now "rewritten"
    mock_dataset_cls.create.assert_not_called()


def test_the_sdk_prints_a_skip_line_for_a_dict_shown_in_the_ui() -> None:
    """Why the store passes ``ui_visible=False``: the SDK's own code, on a MockDataset."""
    mock_ds = make_mock_dataset("ds-x")
    Dataset.set_metadata(mock_ds, {"a": 1}, metadata_name="m", ui_visible=True)
    (call,) = mock_ds._task.get_logger.return_value.report_text.call_args_list
    assert call.args[0].startswith(UI_SKIP_LINE) and call.kwargs == {"print_console": True}


def test_get_reads_the_record_without_downloading_the_dataset(mock_dataset_cls) -> None:
    record = {"files": [{"path": "train/A/a.jpg", "sha256": "0" * 64, "size": 10}], "metadata": {}}
    mock_ds = make_mock_dataset("ds-7", {RECORD_ARTIFACT: mock_artifact(record)})
    mock_dataset_cls.get.return_value = mock_ds

    version = get_store("clearml").get(dataset_id="ds-7")

    # a lookup is not a use: no alias, and the SDK's "no alias" line silenced
    mock_dataset_cls.get.assert_called_once_with(dataset_id="ds-7", silence_alias_warnings=True)
    mock_ds.get_local_copy.assert_not_called()
    assert [f.path for f in version.files] == ["train/A/a.jpg"]
    assert (version.version, version.parents, version.tags) == ("1.0.2", ["raw-1"], ["t"])


def test_a_dataset_made_elsewhere_is_a_clear_error(mock_dataset_cls) -> None:
    """No record artifact: refused at once, without fetching any file of that dataset."""
    mock_ds = make_mock_dataset("ds-foreign")
    mock_dataset_cls.get.return_value = mock_ds
    with pytest.raises(DatasetNotFoundError, match="ds-foreign has no asl_store_record record"):
        get_store("clearml").get(dataset_id="ds-foreign")
    mock_ds.get_local_copy.assert_not_called()


def test_list_versions_asks_for_the_exact_name(mock_dataset_cls) -> None:
    record = {"files": [], "metadata": {}}
    mock_dataset_cls.list_datasets.return_value = [
        {"name": "ASL_raw", "id": "raw-1", "created": "2026-01-01"},
        {"name": "ASL", "id": "ds-2", "created": "2026-01-03"},
        {"name": "ASL", "id": "ds-1", "created": "2026-01-02"},
    ]
    by_id = {
        i: make_mock_dataset(i, {RECORD_ARTIFACT: mock_artifact(record)}) for i in ("ds-1", "ds-2")
    }
    mock_dataset_cls.get.side_effect = lambda dataset_id, **_: by_id[dataset_id]

    versions = get_store("clearml").list_versions("ASL")

    mock_dataset_cls.list_datasets.assert_called_once_with(
        dataset_project="ASL/datasets", partial_name="^ASL$", only_completed=True
    )
    assert [v.id for v in versions] == ["ds-1", "ds-2"]


def test_a_relative_output_uri_is_a_one_line_error(mock_dataset_cls, monkeypatch) -> None:
    monkeypatch.setenv("ASL_OUTPUT_URI", "datasets")
    with pytest.raises(ValueError, match="ASL_OUTPUT_URI='datasets' must be a URL"):
        get_store("clearml")
    mock_dataset_cls.create.assert_not_called()


def test_without_output_uri_the_sdk_default_files_server_is_kept(
    mock_dataset_cls, tmp_path
) -> None:
    mock_dataset_cls.create.return_value = make_mock_dataset("ds-d")
    ClearMLDatasetStore().create("ASL", _files(tmp_path))
    assert (
        mock_dataset_cls.create.call_args.kwargs["output_uri"] is None
    )  # Dataset.create's default


def test_on_an_agent_datasets_go_where_the_pipeline_sent_its_step(
    mock_dataset_cls, tmp_path, monkeypatch
) -> None:
    """The agent passes on no variable of the launching shell; the pipeline put the launch's
    ``ASL_OUTPUT_URI`` on the step task, so the step's datasets follow it there."""
    import clearml

    mock_step = mock.create_autospec(Task, instance=True)  # MockTask: the agent's step task
    mock_step.output_uri = "s3://bucket/asl"
    monkeypatch.setattr(clearml.Task, "current_task", mock.Mock(return_value=mock_step))
    mock_dataset_cls.create.return_value = make_mock_dataset("ds-a")
    for name in ("CLEARML_TASK_ID", "TRAINS_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    get_store("clearml").create("ASL", _files(tmp_path))
    assert mock_dataset_cls.create.call_args.kwargs["output_uri"] is None  # here: the default
    monkeypatch.setenv("TRAINS_TASK_ID", "step-1")  # either name, as the SDK reads it
    get_store("clearml").create("ASL", _files(tmp_path))
    assert mock_dataset_cls.create.call_args.kwargs["output_uri"] == "s3://bucket/asl"
    monkeypatch.setenv("ASL_OUTPUT_URI", "gs://other/asl")  # the agent's own choice wins
    get_store("clearml").create("ASL", _files(tmp_path))
    assert mock_dataset_cls.create.call_args.kwargs["output_uri"] == "gs://other/asl"


def _version(mock_dataset_cls, tmp_path: Path):
    """A stored version (its record read through MockDataset) with files in ``tmp_path``."""
    stored = {"manifest.json": b"{}", "train/A/a.jpg": b"a" * 10}  # the SDK's cached copy
    for rel, data in stored.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    files = [
        {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for rel, data in stored.items()
    ]
    record = {"files": files, "metadata": {}}
    mock_ds = make_mock_dataset("ds-9", {RECORD_ARTIFACT: mock_artifact(record)})
    mock_ds.get_local_copy.return_value = str(tmp_path)
    mock_dataset_cls.get.return_value = mock_ds
    return mock_ds, get_store("clearml").get(dataset_id="ds-9")


def test_a_task_that_uses_a_version_names_it(mock_dataset_cls, tmp_path) -> None:
    """``Dataset.get`` without ``alias`` records nothing on the consuming task; with it the SDK
    sets the task parameter ``Datasets/<alias>`` to the version id (clearml/datasets/
    dataset.py, ``Dataset.get`` -> ``finish_dataset_get``), the web UI's "Datasets" section."""
    mock_ds, version = _version(mock_dataset_cls, tmp_path)
    mock_dataset_cls.get.reset_mock()

    assert get_store("clearml").local_copy(version) == tmp_path

    mock_dataset_cls.get.assert_called_once_with(dataset_id="ds-9", alias="ASL 1.0.2")
    mock_ds.get_local_copy.assert_called_once_with()


def test_one_file_of_a_version_fetches_only_its_chunks(mock_dataset_cls, tmp_path) -> None:
    """publish_landmarks reads the ASL manifest: ``get_local_copy(files=[...])`` fetches only
    the chunks holding those files (clearml/datasets/dataset.py, ``Dataset.get_local_copy``)."""
    mock_ds, version = _version(mock_dataset_cls, tmp_path)
    store = get_store("clearml")

    assert store.local_file(version, "manifest.json") == tmp_path / "manifest.json"

    mock_ds.get_local_copy.assert_called_once_with(files=["manifest.json"])
    assert mock_dataset_cls.get.call_args.kwargs == {"dataset_id": "ds-9", "alias": "ASL 1.0.2"}
    with pytest.raises(DatasetNotFoundError, match="ds-9 \\(ASL\\) has no file nope.json"):
        store.local_file(version, "nope.json")


def test_output_uri_none_leaves_datasets_to_the_files_server(
    mock_dataset_cls, tmp_path, monkeypatch
) -> None:
    """``ASL_OUTPUT_URI=none`` (the README: model weights stay local) made every store call
    raise "must be a URL"; datasets keep the SDK default destination instead."""
    monkeypatch.setenv("ASL_OUTPUT_URI", "none")
    mock_dataset_cls.create.return_value = make_mock_dataset("ds-n")
    get_store("clearml").create("ASL", _files(tmp_path))
    assert mock_dataset_cls.create.call_args.kwargs["output_uri"] is None


def test_a_file_altered_in_the_sdks_cached_copy_is_refused(mock_dataset_cls, tmp_path) -> None:
    """The SDK reuses a cached dataset folder after comparing file sizes only
    (``Dataset.get_local_copy``): a same-size file altered there was trained on as the
    version. Each listed file is now hashed against the record when the copy is opened."""
    _, version = _version(mock_dataset_cls, tmp_path)
    store = get_store("clearml")
    assert store.local_copy(version) == tmp_path
    (tmp_path / "train/A/a.jpg").write_bytes(b"b" * 10)  # same size, other bytes
    with pytest.raises(DatasetIntegrityError) as info:
        store.local_copy(version)
    assert "train/A/a.jpg in the SDK's cached copy" in str(info.value)
    assert "\n" not in str(info.value) and f"delete {tmp_path}" in str(info.value)
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(DatasetIntegrityError, match="manifest.json in the SDK's cached copy"):
        store.local_file(version, "manifest.json")


def sdk_artifact(tmp_path: Path, text: str) -> Artifact:
    """The SDK's own ``Artifact`` for a JSON dict artifact whose file holds ``text``."""
    from clearml.backend_api.services import tasks

    stored = tmp_path / f"{RECORD_ARTIFACT}.json"
    stored.write_text(text)
    api = tasks.Artifact(
        key=RECORD_ARTIFACT,
        type="dict",
        mode="output",
        uri=stored.as_uri(),
        type_data=tasks.ArtifactTypeData(content_type="application/json"),
    )
    return Artifact(api)


@pytest.mark.parametrize(
    "text",
    [
        '{"files": [{"path": "a.jpg", "sha',  # cut short: the SDK hands back a Path
        '["not", "a", "record"]',
        '{"files": [{"path": "../../x", "sha256": "' + "0" * 64 + '", "size": 1}]}',
        '{"files": [{"path": "a.jpg", "sha256": null, "size": 1}], "metadata": {}}',
    ],
)
def test_an_unreadable_record_is_one_line_not_a_traceback(mock_dataset_cls, tmp_path, text):
    """``Artifact.get`` returns a ``pathlib2.Path`` for a file it cannot parse
    (clearml/binding/artifacts.py): ``store.get`` had raised TypeError, which ``find`` does not
    catch, so every publish step reusing that dataset name died with a traceback."""
    mock_ds = make_mock_dataset("ds-bad", {RECORD_ARTIFACT: sdk_artifact(tmp_path, text)})
    mock_dataset_cls.get.return_value = mock_ds
    with pytest.raises(DatasetIntegrityError) as info:
        get_store("clearml").get(dataset_id="ds-bad")
    assert "ds-bad: its asl_store_record record is unreadable" in str(info.value)
    assert "\n" not in str(info.value)

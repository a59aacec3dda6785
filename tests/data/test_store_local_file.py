"""One file of a stored version (publish_landmarks' manifest) without the whole version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from asl_recognition.store import DatasetNotFoundError
from asl_recognition.store.base import DatasetIntegrityError
from asl_recognition.store.local import LocalDatasetStore


def test_the_local_store_reads_one_file_without_a_checkout(tmp_path: Path) -> None:
    sources = {"manifest.json": b'{"classes": []}', "train/A/a.jpg": b"\xff\xd8jpeg"}
    for rel, data in sources.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    store = LocalDatasetStore(tmp_path / "store")
    version = store.create("ASL", {rel: tmp_path / "src" / rel for rel in sources})

    assert store.local_file(version, "manifest.json").read_bytes() == sources["manifest.json"]
    assert not store.checkouts.exists() or not any(store.checkouts.iterdir())  # no checkout
    with pytest.raises(DatasetNotFoundError, match="has no file absent.json"):
        store.local_file(version, "absent.json")


def _stored(tmp_path: Path) -> tuple[LocalDatasetStore, object]:
    sources = {"manifest.json": b'{"classes": []}', "train/A/a.jpg": b"\xff\xd8jpeg"}
    for rel, data in sources.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    store = LocalDatasetStore(tmp_path / "ws" / "store")
    files = {rel: tmp_path / "src" / rel for rel in sources}
    return store, store.create("ASL", files, tags=["fingerprint:x"])


@pytest.mark.parametrize("name", ["../../../../victim.txt", "<abs>", "train/./x.jpg", "a//b", ""])
def test_an_edited_record_never_writes_outside_the_store(tmp_path: Path, name: str) -> None:
    """A version record's file names were checked only when it was created: edited to
    ``../`` names, the next checkout hard-linked stored objects outside the store and, where a
    file stood, copied over it."""
    store, version = _stored(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    record = store.versions / f"{version.id}.json"
    data = json.loads(record.read_text())
    data["files"][0]["path"] = name.replace("<abs>", str(victim))
    record.write_text(json.dumps(data))
    before = sorted(p for p in tmp_path.rglob("*") if "store" not in p.parts)
    with pytest.raises(DatasetIntegrityError) as info:
        store.local_copy(store.get(dataset_id=version.id))
    assert str(record) in str(info.value) and "\n" not in str(info.value)
    assert victim.read_text() == "keep me"
    assert sorted(p for p in tmp_path.rglob("*") if "store" not in p.parts) == before
    with pytest.raises(DatasetIntegrityError):
        store.list_versions("ASL")


@pytest.mark.parametrize("text", ["{not json", '{"id": "x", "name": "ASL"}', "[1]", "null"])
def test_a_malformed_record_is_one_line_naming_it(tmp_path: Path, text: str) -> None:
    """A bare JSON error naming no file, or a TypeError traceback, for every lookup by name."""
    store, _ = _stored(tmp_path)
    record = store.versions / ("0" * 32 + ".json")
    record.write_text(text)
    with pytest.raises(DatasetIntegrityError) as info:
        store.get(name="ASL")
    assert str(record) in str(info.value) and "not a readable version record" in str(info.value)


def test_an_edited_record_id_never_reaches_a_path(tmp_path: Path) -> None:
    """The record's ``id`` names its checkout folder: edited to ``../`` it had the checkout
    build delete a folder outside the store (``rmtree`` of a target without a marker)."""
    store, version = _stored(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep me")
    record = store.versions / f"{version.id}.json"
    data = json.loads(record.read_text())
    data["id"] = "../../../victim"
    record.write_text(json.dumps(data))
    with pytest.raises(DatasetIntegrityError) as info:
        store.local_copy(store.get(dataset_id=version.id))
    assert str(record) in str(info.value) and "\n" not in str(info.value)
    assert (victim / "keep.txt").read_text() == "keep me"
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    "field, value",
    [("created", None), ("metadata", []), ("tags", None), ("version", "1.0.x"), ("parents", "ab")],
)
def test_a_record_with_a_wrong_field_is_one_line_naming_it(
    tmp_path: Path, field: str, value: object
) -> None:
    """A wrong type in one record's field was a traceback (TypeError, AttributeError) for
    every lookup by name, naming no file."""
    store, version = _stored(tmp_path)
    record = store.versions / f"{version.id}.json"
    data = json.loads(record.read_text())
    data[field] = value
    record.write_text(json.dumps(data))
    with pytest.raises(DatasetIntegrityError) as info:
        store.create("ASL", {}, tags=["fingerprint:x"])
    assert str(record) in str(info.value) and "\n" not in str(info.value)


def test_publishing_again_repairs_even_when_the_inputs_now_make_other_bytes(
    tmp_path: Path,
) -> None:
    """A stored object altered, the step run again as the refusal says, but its inputs now
    make other bytes (another Pillow's JPEG encoder): the old version with its altered object
    was handed back as the repair, and training refused it again, for good."""
    store, version = _stored(tmp_path)
    obj = store.objects / version.files[1].sha256[:2] / version.files[1].sha256
    obj.chmod(0o644)
    obj.write_bytes(b"altered")
    (tmp_path / "src" / "train/A/a.jpg").write_bytes(b"\xff\xd8other encoder")
    files = {e.path: tmp_path / "src" / e.path for e in version.files}
    with pytest.warns(UserWarning, match="building it again"):
        assert store.reusable("ASL", ["fingerprint:x"]) is None  # the step builds it again
    again = store.create("ASL", files, tags=["fingerprint:x"])
    folder = store.local_copy(again)
    assert (folder / "train/A/a.jpg").read_bytes() == b"\xff\xd8other encoder"
    assert store.reusable("ASL", ["fingerprint:x"]) == again


def test_an_id_of_another_dataset_is_refused_by_name(tmp_path: Path) -> None:
    """An ASL id given as --raw-version (or an ASL_raw id as --landmarks-version) was taken as
    that dataset: a TypeError or FileNotFoundError traceback deep in the step."""
    store, asl = _stored(tmp_path)
    assert store.version_for("ASL", asl.id) == asl
    for name in ("ASL_raw", "ASL_landmarks"):
        with pytest.raises(DatasetNotFoundError) as info:
            store.version_for(name, asl.id)
        assert str(info.value) == f"{asl.id} is a ASL version, not one of {name}"


def test_a_folder_in_place_of_a_file_is_one_line_naming_it(tmp_path: Path) -> None:
    """The restore's rename over a folder was an IsADirectoryError traceback, leaving its link."""
    store, version = _stored(tmp_path)
    folder = store.local_copy(version)
    (folder / "train/A/a.jpg").unlink()
    (folder / "train/A/a.jpg").mkdir()
    with pytest.raises(DatasetIntegrityError) as info:
        store.local_copy(version)
    message = str(info.value)
    assert "\n" not in message and "holds a folder where the file train/A/a.jpg" in message
    assert sorted(p.name for p in (folder / "train/A").iterdir()) == ["a.jpg"]
    shutil.rmtree(folder)  # as the line says: built again, intact
    assert (store.local_copy(version) / "train/A/a.jpg").read_bytes() == b"\xff\xd8jpeg"

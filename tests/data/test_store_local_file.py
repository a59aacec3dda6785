"""One file of a stored version (publish_landmarks' manifest) without the whole version."""

from __future__ import annotations

import json
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
    return store, store.create("ASL", {rel: tmp_path / "src" / rel for rel in sources})


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

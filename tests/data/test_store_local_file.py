"""One file of a stored version (publish_landmarks' manifest) without the whole version."""

from __future__ import annotations

from pathlib import Path

import pytest

from asl_recognition.store import DatasetNotFoundError
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

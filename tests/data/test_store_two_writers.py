"""The local dataset store under two writers (#19.1) and hostile dataset ids (#19.17).

Real processes (multiprocessing, fork) released together on one event: each publishes the same
inputs (the same ``fingerprint:`` tag), as two pipeline runs of one command did.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from asl_recognition.store import DatasetNotFoundError
from asl_recognition.store.local import LocalDatasetStore

WRITERS = 4


def _publish(root: str, source: str, go, out) -> None:
    go.wait(10)
    version = LocalDatasetStore(root).create(
        "ASL_landmarks", {"landmarks.csv": source}, tags=["fingerprint:abc", "landmarks"]
    )
    out.put(version.id)


def test_writers_of_the_same_inputs_at_once_publish_one_version(tmp_path: Path) -> None:
    source = tmp_path / "landmarks.csv"
    source.write_text("file,class\na.jpg,A\n")
    root = tmp_path / "datasets"
    LocalDatasetStore(root)
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_publish, args=(str(root), str(source), go, out))
        for _ in range(WRITERS)
    ]
    for proc in procs:
        proc.start()
    go.set()
    for proc in procs:
        proc.join(30)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    ids = {out.get(timeout=5) for _ in range(WRITERS)}
    versions = LocalDatasetStore(root).list_versions("ASL_landmarks")
    assert len(versions) == 1 and ids == {versions[0].id}
    assert versions[0].version == "1.0.0"


@pytest.mark.parametrize("bad", ["../../x", "../versions/x", "/etc/passwd", "Z" * 32])
def test_a_dataset_id_that_is_not_one_never_reaches_a_path(tmp_path: Path, bad: str) -> None:
    store = LocalDatasetStore(tmp_path / "ws" / "datasets")
    source = tmp_path / "a.txt"
    source.write_text("a")
    real = store.create("ASL", {"a.txt": source})
    (tmp_path / "ws" / "x.json").write_text(json.dumps(real.to_dict()))  # what ../../x reads
    with pytest.raises(DatasetNotFoundError, match="is not a dataset id"):
        store.get(dataset_id=bad)
    with pytest.raises(DatasetNotFoundError, match="no dataset ASL version"):
        store.version_for("ASL", bad)  # neither an id nor a version

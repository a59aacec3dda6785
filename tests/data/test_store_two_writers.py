"""The local dataset store under two writers (#19.1), two readers and hostile dataset ids (#19.17).

Real processes (multiprocessing, fork) released together on one event: each publishes the same
inputs (the same ``fingerprint:`` tag), as two pipeline runs of one command did, or checks out
the same new version, as two training runs on one dataset do.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from asl_recognition.store import DatasetNotFoundError
from asl_recognition.store.local import LocalDatasetStore

WRITERS = 4
READERS = 4
FILES = 3000  # enough that one reader's checkout is still being read while another builds


def _many_files(tmp_path: Path, count: int) -> dict[str, Path]:
    files = {}
    for i in range(count):
        path = tmp_path / "src" / f"train/{'AB'[i % 2]}/{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"image {i}".encode())
        files[path.relative_to(tmp_path / "src").as_posix()] = path
    return files


def _digest(folder: Path, version) -> str:
    """Every listed file of the checkout, read back in order (what a training run decodes)."""
    digest = hashlib.sha256()
    for entry in version.files:
        digest.update((folder / entry.path).read_bytes())
    return digest.hexdigest()


def _read(root: str, dataset_id: str, go, out) -> None:
    go.wait(10)
    store = LocalDatasetStore(root)
    version = store.get(dataset_id=dataset_id)
    folder = store.local_copy(version)
    out.put((str(folder), _digest(folder, version), os.stat(folder).st_ino))


def _publish(root: str, source: str, go, out) -> None:
    go.wait(10)
    version = LocalDatasetStore(root).create(
        "ASL_landmarks", {"landmarks.csv": source}, tags=["fingerprint:abc", "landmarks"]
    )
    out.put((version.id, version.reused))


def _at_once(target, args: tuple, count: int, timeout: float) -> list:
    """``count`` forked processes of ``target(*args, go, out)``, released together: each must
    exit 0; what each put on ``out``."""
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, go, out)) for _ in range(count)]
    for proc in procs:
        proc.start()
    go.set()
    for proc in procs:
        proc.join(timeout)
    assert [p.exitcode for p in procs] == [0] * count
    return [out.get(timeout=5) for _ in range(count)]


def test_writers_of_the_same_inputs_at_once_publish_one_version(tmp_path: Path) -> None:
    source = tmp_path / "landmarks.csv"
    source.write_text("file,class\na.jpg,A\n")
    root = tmp_path / "datasets"
    LocalDatasetStore(root)
    results = _at_once(_publish, (str(root), str(source)), WRITERS, 30)
    versions = LocalDatasetStore(root).list_versions("ASL_landmarks")
    assert len(versions) == 1 and {i for i, _ in results} == {versions[0].id}
    assert versions[0].version == "1.0.0"
    # one made it; the others were handed it (all had said reused=False)
    assert sorted(reused for _, reused in results) == [False] + [True] * (WRITERS - 1)
    stored = json.loads((root / "versions" / f"{versions[0].id}.json").read_text())
    assert "reused" not in stored  # how one call got it, not a fact of the version


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


def test_readers_of_a_new_version_at_once_share_one_checkout(tmp_path: Path) -> None:
    store = LocalDatasetStore(tmp_path / "datasets")
    version = store.create("ASL", _many_files(tmp_path, FILES))
    expected = _digest(tmp_path / "src", version)  # the published sources
    # each exits 0: no FileNotFoundError, no ENOTEMPTY
    results = set(_at_once(_read, (str(store.root), version.id), READERS, 60))
    assert len(results) == 1  # one folder, never replaced under a reader (same inode)
    folder, digest, _ = results.pop()
    assert digest == expected and Path(folder) == store.checkouts / version.id
    assert sorted(p.name for p in store.checkouts.iterdir()) == [f".{version.id}.lock", version.id]


def _build_then_hang(root: str, dataset_id: str, linked) -> None:
    """Build the checkout, but stop for good half-way (until killed)."""
    real_link, done = os.link, []

    def link(source, dest, *args, **kwargs) -> None:
        real_link(source, dest, *args, **kwargs)
        done.append(dest)
        if len(done) == 100:
            linked.set()
            time.sleep(60)

    os.link = link
    store = LocalDatasetStore(root)
    store.local_copy(store.get(dataset_id=dataset_id))


def test_a_reader_waits_for_the_builder_and_rebuilds_what_a_killed_one_left(
    tmp_path: Path,
) -> None:
    store = LocalDatasetStore(tmp_path / "datasets")
    version = store.create("ASL", _many_files(tmp_path, 300))
    ctx = multiprocessing.get_context("fork")
    linked, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    builder = ctx.Process(target=_build_then_hang, args=(str(store.root), version.id, linked))
    builder.start()
    assert linked.wait(10)
    reader = ctx.Process(target=_read, args=(str(store.root), version.id, go, out))
    reader.start()
    go.set()
    time.sleep(1.0)
    assert reader.is_alive() and out.empty()  # it waits: one build at a time
    os.kill(builder.pid, signal.SIGKILL)  # the builder dies half-way; its lock dies with it
    builder.join(10)
    reader.join(30)
    assert reader.exitcode == 0
    folder, digest, _ = out.get(timeout=5)
    assert digest == _digest(tmp_path / "src", version)
    assert (Path(folder) / ".complete").is_file()
    assert not list(store.checkouts.glob(".*.tmp*"))  # the killed builder's half tree is gone


def _state(number: int) -> bytes:
    return number.to_bytes(8, "big") * (1 << 19)  # 4 MB: hashing it takes long enough to race


def _whole_state(data: bytes) -> bool:
    return len(data) == 8 << 19 and data == data[:8] * (1 << 19)


def _rewrite_forever(path: str, go) -> None:
    """Another process replacing ``path`` with a new whole state, as fast as it can."""
    go.set()
    staged = f"{path}.next"
    for number in range(1, 1 << 62):
        with open(staged, "wb") as fh:
            fh.write(_state(number))
        os.replace(staged, path)


def test_a_file_rewritten_while_it_is_published_is_stored_whole_under_its_hash(
    tmp_path: Path,
) -> None:
    """A training run may rewrite a table while a pipeline publishes it: each version must
    hold one whole state of the file under that state's hash, so its checkout opens."""
    source = tmp_path / "landmarks.csv"
    source.write_bytes(_state(0))
    store = LocalDatasetStore(tmp_path / "datasets")
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    writer = ctx.Process(target=_rewrite_forever, args=(str(source), go), daemon=True)
    writer.start()
    try:
        assert go.wait(10)
        versions = [store.create("ASL_landmarks", {"landmarks.csv": source}) for _ in range(40)]
    finally:
        writer.kill()
        writer.join(5)
    for version in versions:  # every checkout opens: no object stored under another's hash
        assert _whole_state(store.local_copy(version).joinpath("landmarks.csv").read_bytes())
    assert len({v.files[0].sha256 for v in versions}) > 1  # the writer really raced them
    assert not list(store.incoming.iterdir())  # no staged copy left behind

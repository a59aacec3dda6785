"""A full disk and a read-only workspace, made real with small tmpfs mounts (root only), and
stored dataset files altered after publishing.

Each program ends with one line naming the workspace, exit 2, no traceback; a version that could
not be written completely is not listed afterwards. A stored image altered (root writes through
the read-only hard links) or a file dropped into a checkout is refused in one line naming it,
never trained on; publishing the right bytes again repairs the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from asl_testkit.cli import run_script
from asl_testkit.published import publish_sample

import asl_recognition.store.local as local_store
from asl_recognition.store import DatasetVersion, get_store
from asl_recognition.store.base import DatasetIntegrityError
from asl_recognition.store.local import LocalDatasetStore
from asl_recognition.training.data import load_split, open_published
from asl_recognition.training.errors import TrainingInputError

ONE_LINE_END = "free space there or point ASL_WORKSPACE at a writable folder"


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``path``; the test is skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def env_with(workspace: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "ASL_"))}
    env.update(ASL_WORKSPACE=str(workspace), HOME=str(workspace.parent))
    return env


def assert_one_line(result: subprocess.CompletedProcess[str], program: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{program}: error: cannot write") and last.endswith(ONE_LINE_END)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_read_only_workspace_is_one_line_in_a_task_and_in_the_runner(tmp_path):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as workspace:
        env = env_with(workspace)
        assert_one_line(run_script("tasks/validate_raw.py", env=env), "validate_raw")
        result = run_script("pipelines/asl_pipeline.py", "--mode", "local-executor", env=env)
        assert_one_line(result, "asl_pipeline")
        assert "Read-only file system" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_report_folder_outside_the_workspace_is_named_not_the_workspace(tmp_path):
    """The workspace has room; the folder --report-dir names does not. The line used to say
    "cannot write to the workspace" and to move ASL_WORKSPACE, which changes nothing. The write
    that fails (GX's Data Docs) names no file, so the line names both places."""
    with tmpfs(tmp_path / "reports", "64k") as reports:
        result = run_script(
            "tasks/validate_raw.py", f"--report-dir={reports}", env=env_with(tmp_path / "ws")
        )
        assert result.returncode == 2, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("validate_raw: error: cannot write: No space left on device")
        assert f"or --report-dir {reports}): free space there or point them elsewhere" in last
        assert not last.endswith(ONE_LINE_END), last


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_is_one_line_and_leaves_no_half_version(tmp_path):
    with tmpfs(tmp_path / "full", "1500k") as workspace:
        result = run_script("tasks/validate_raw.py", env=env_with(workspace))
        assert_one_line(result, "validate_raw")
        assert "No space left on device" in result.stderr
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ASL_WORKSPACE", str(workspace))
            assert get_store("local").list_versions("ASL_raw") == []


def _object(store: LocalDatasetStore, version: DatasetVersion, rel: str) -> Path:
    """The stored object behind ``rel`` (the bytes its checkout hard-links)."""
    sha = next(e.sha256 for e in version.files if e.path == rel)
    return store.objects / sha[:2] / sha


def _overwrite(path: Path, data: bytes) -> None:
    """Write over a read-only stored file, as root can (chmod first for other users)."""
    path.chmod(0o644)
    path.write_bytes(data)


def _published(tmp_path: Path) -> tuple[LocalDatasetStore, DatasetVersion]:
    dataset_id = publish_sample(tmp_path, classes=["A", "B"], per_class=10)  # 6 train each
    store = get_store("local")
    return store, store.get(dataset_id=dataset_id)


def test_an_image_altered_in_the_store_is_refused_not_trained_on(asl_workspace, tmp_path) -> None:
    store, version = _published(tmp_path)
    open_published(version.id)  # its checkout exists and links the objects
    rel = next(e.path for e in version.files if e.path.startswith("train/A/"))
    other = next(e.path for e in version.files if e.path.startswith("train/B/"))
    _overwrite(_object(store, version, rel), _object(store, version, other).read_bytes())
    with pytest.raises(TrainingInputError) as refused:
        open_published(version.id)
    message = str(refused.value)
    assert rel in message and "sha256" in message and "\n" not in message


class _CacheStore(LocalDatasetStore):
    """A backend whose local copy is a plain cached folder (as ClearML's), not policed."""

    def local_copy(self, dataset: DatasetVersion) -> Path:
        cache = self.root.parent / "cache" / dataset.id
        if not cache.exists():
            shutil.copytree(super().local_copy(dataset), cache)
        return cache


@pytest.mark.parametrize("backend", ["checkout", "cache"])
def test_an_image_dropped_into_a_local_copy_is_not_trained_on(
    asl_workspace, tmp_path, backend
) -> None:
    store, version = _published(tmp_path)
    if backend == "cache":
        store = _CacheStore(store.root)
    ds = open_published(version.id, store)
    train = load_split(ds.root, "train", ds.classes, ds.image_size)
    assert len(train) == sum(e.path.startswith("train/") for e in version.files) == 12
    shutil.copyfile(ds.root / train.paths[-1], ds.root / "train/A/injected.jpg")
    with pytest.raises(TrainingInputError, match="train/A/injected.jpg.*does not list"):
        open_published(version.id, store)


def test_a_checkout_is_never_built_from_an_altered_object(tmp_path: Path) -> None:
    store = LocalDatasetStore(tmp_path / "datasets")
    (tmp_path / "a.jpg").write_bytes(b"the real image")
    version = store.create("ASL", {"train/A/a.jpg": tmp_path / "a.jpg"})
    _overwrite(_object(store, version, "train/A/a.jpg"), b"another image")
    with pytest.raises(DatasetIntegrityError, match="file train/A/a.jpg: its stored object"):
        store.local_copy(version)
    with pytest.raises(DatasetIntegrityError, match="file train/A/a.jpg: its stored object"):
        store.local_file(version, "train/A/a.jpg")
    assert not (store.checkouts / version.id).exists()


def test_publishing_the_right_bytes_again_repairs_an_altered_object(tmp_path: Path) -> None:
    store = LocalDatasetStore(tmp_path / "datasets")
    (tmp_path / "a.jpg").write_bytes(b"the real image")
    version = store.create("ASL", {"train/A/a.jpg": tmp_path / "a.jpg"})
    checkout = store.local_copy(version)
    _overwrite(checkout / "train/A/a.jpg", b"another image")  # the object, through its link
    with pytest.raises(DatasetIntegrityError, match="train/A/a.jpg"):
        store.local_copy(version)
    store.create("ASL", {"train/A/a.jpg": tmp_path / "a.jpg"})  # the same bytes again
    assert _object(store, version, "train/A/a.jpg").read_bytes() == b"the real image"
    with pytest.warns(UserWarning, match="restored from its intact stored object"):
        assert store.local_copy(version) == checkout
    assert (checkout / "train/A/a.jpg").read_bytes() == b"the real image"


def test_an_open_hashes_only_the_files_whose_stats_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalDatasetStore(tmp_path / "datasets")
    sources = {}
    for i in range(50):
        sources[f"train/A/{i:02d}.jpg"] = tmp_path / f"{i:02d}.jpg"
        sources[f"train/A/{i:02d}.jpg"].write_bytes(f"image {i:02d}".encode())
    version = store.create("ASL", sources)
    checkout = store.local_copy(version)
    hashed: list[str] = []
    real = local_store.sha256_file
    monkeypatch.setattr(
        local_store, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p)
    )
    kept = {p.name: p.stat().st_mtime_ns for p in store.checkouts.glob(f"*{version.id}*")}
    kept[".complete"] = (checkout / ".complete").stat().st_mtime_ns
    assert store.local_copy(version) == checkout and hashed == []  # unchanged: stats only
    assert {p.name: p.stat().st_mtime_ns for p in store.checkouts.glob(f"*{version.id}*")} | {
        ".complete": (checkout / ".complete").stat().st_mtime_ns
    } == kept  # and nothing written, not even the lock
    _overwrite(checkout / "train/A/07.jpg", b"image 07, relabelled")
    with pytest.raises(DatasetIntegrityError, match="train/A/07.jpg"):
        store.local_copy(version)
    assert sorted(hashed) == sorted(["07.jpg", _object(store, version, "train/A/07.jpg").name])


def test_a_same_size_rewrite_with_its_mtime_put_back_is_still_caught(tmp_path: Path) -> None:
    """Size, inode and mtime all as recorded: the ctime, which no user can set back, differs."""
    store = LocalDatasetStore(tmp_path / "datasets")
    (tmp_path / "a.jpg").write_bytes(b"the real image")
    version = store.create("ASL", {"train/A/a.jpg": tmp_path / "a.jpg"})
    checkout = store.local_copy(version)
    path = checkout / "train/A/a.jpg"
    before = os.lstat(path)
    time.sleep(0.05)  # past the kernel's timestamp tick (coarse before Linux 6.13)
    _overwrite(path, b"the fake image")  # same size, same inode
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.lstat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    with pytest.raises(DatasetIntegrityError, match="train/A/a.jpg"):
        store.local_copy(version)


def test_a_second_checkout_of_the_same_objects_costs_one_hash_per_shared_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linking an object into another version's checkout changes its ctime: the first checkout
    hashes those files once on its next open, records them, then opens by stats alone again."""
    store = LocalDatasetStore(tmp_path / "datasets")
    sources = {f"train/A/{i}.jpg": tmp_path / f"{i}.jpg" for i in range(4)}
    for i, source in enumerate(sources.values()):
        source.write_bytes(f"image {i}".encode())
    first = store.create("ASL", sources)
    store.local_copy(first)
    second = store.create("ASL", {**sources, "train/B/x.jpg": sources["train/A/0.jpg"]})
    store.local_copy(second)
    hashed: list[str] = []
    real = local_store.sha256_file
    monkeypatch.setattr(
        local_store, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p)
    )
    store.local_copy(first)
    assert sorted(hashed) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    hashed.clear()
    store.local_copy(first)
    assert hashed == []


def test_rerunning_the_steps_repairs_a_lost_or_altered_stored_file(
    task_env, asl_workspace, sample_dir, tmp_path
) -> None:
    """Each data step reused the version of its inputs without looking at its files: a stored
    file lost or altered was refused by every later read, and running the step again (what the
    refusal asked for) reused the broken version; the only way out was deleting its record by
    hand. Now the step builds it again, which puts the intact bytes back under the same id."""
    from asl_recognition.classes import CLASSES

    source = tmp_path / "raw"
    for cls in CLASSES:
        (source / cls).mkdir(parents=True)
        for src in sorted((sample_dir / cls).glob("*.jpg"))[:4]:
            shutil.copyfile(src, source / cls / src.name)
    steps = {
        "validate_raw": ["--source", str(source), "--min-per-class", "1"],
        "publish_dataset": ["--raw-version", "latest", "--group-by", "none"],
        "publish_landmarks": ["--dataset-version", "latest"],
    }
    names = {"validate_raw": "ASL_raw", "publish_dataset": "ASL", "publish_landmarks": None}
    store = get_store("local")
    for step, args in steps.items():
        done = run_script(f"tasks/{step}.py", *args, env=task_env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    for step, args in steps.items():
        name = names[step] or "ASL_landmarks"
        version = store.get(name=name)
        rel = version.files[-1].path
        damaged = _object(store, version, rel)
        if step == "publish_dataset":
            damaged.unlink()
        else:
            _overwrite(damaged, b"altered")
        assert not store.intact(version)
        again = run_script(f"tasks/{step}.py", *args, env=task_env, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "building it again to repair it" in again.stdout + again.stderr, again.stdout[
            -2000:
        ]
        assert store.get(name=name).id == version.id and store.intact(version), step

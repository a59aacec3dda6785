"""A writer killed with SIGKILL leaves temp files; the next start removes them, and only them.

The writers here are real processes that kill themselves (SIGKILL) mid-write.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import time
from pathlib import Path

import pytest
from asl_testkit.cli import lock_held_elsewhere, run_script

from asl_recognition.classes import CLASSES
from asl_recognition.data.publish import STAGING, staging_dir
from asl_recognition.data.raw import validate_raw
from asl_recognition.paths import REPO_ROOT
from asl_recognition.store import get_store
from asl_recognition.store.local import LocalDatasetStore


def _killed(code: str, env: dict[str, str] | None = None) -> int:
    """Run ``code`` in a fresh interpreter that SIGKILLs itself; returns its pid."""
    proc = run_script(
        "-c",
        textwrap.dedent(code),
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
    return int(proc.stdout.split()[-1])


def test_store_removes_temp_objects_of_a_killed_writer(tmp_path: Path, sample_dir: Path) -> None:
    root, image = tmp_path / "datasets", sorted((sample_dir / "A").glob("*.jpg"))[0]
    pid = _killed(f"""
        import os, signal
        import asl_recognition.store.local as local
        store = local.LocalDatasetStore({str(root)!r})
        copy = local.copy_hashed
        def copy_then_die(src, dst):
            copy(src, dst)
            print(os.getpid(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        local.copy_hashed = copy_then_die
        store.create("ASL_raw", {{"A/a.jpg": {str(image)!r}}})
        """)
    (left,) = root.glob("objects/*/*")
    assert f".tmp{pid}n" in left.name and left.read_bytes() == image.read_bytes()
    alive = left.with_name(f".other.tmp{os.getpid()}")  # a writer still running: untouched
    alive.write_bytes(b"in progress")
    store = LocalDatasetStore(root)
    assert not left.exists() and alive.exists()
    version = store.create("ASL_raw", {"A/a.jpg": image})  # and the store still works
    assert store.local_copy(version).joinpath("A/a.jpg").read_bytes() == image.read_bytes()


def test_publish_removes_staging_folders_of_a_killed_run(asl_workspace: Path) -> None:
    pid = _killed(
        """
        import os, signal
        from asl_recognition.data.publish import staging_dir
        with staging_dir() as stage:
            open(os.path.join(stage, "half.jpg"), "wb").write(b"x")
            print(os.getpid(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        env={"ASL_WORKSPACE": str(asl_workspace)},
    )
    parent = asl_workspace / STAGING
    (left,) = [p for p in parent.iterdir() if p.is_dir()]
    assert left.name.startswith(f"run-{pid}-") and (left / "half.jpg").exists()
    with staging_dir() as stage:
        assert not left.exists() and Path(stage).is_dir()
        with staging_dir() as second:  # this run's own folder is not stale
            assert Path(stage).is_dir() and Path(second).is_dir()


def test_an_older_versions_staging_leftovers_are_removed(asl_workspace: Path) -> None:
    """Staging folders of a run killed before the folders moved to tmp/publish/ had stayed."""
    dead = _killed("import os; print(os.getpid(), flush=True); os.kill(os.getpid(), 9)")
    old = asl_workspace / "tmp" / f"asl_publish_{dead}_x1y2"
    live = asl_workspace / "tmp" / f"asl_publish_{os.getpid()}_x1y2"
    for folder in (old, live):
        folder.mkdir(parents=True)
        (folder / "half.jpg").write_bytes(b"x")
    with staging_dir():
        assert not old.exists() and live.exists()


def test_a_live_run_in_another_pid_namespace_keeps_its_staging_folder(asl_workspace: Path):
    """Its pid means nothing here (a second agent's container on a shared workspace): judged
    by pid, its live folder was taken for a dead run's and deleted under it. Its lock is held
    by a live process here, under a pid that no process of this namespace has."""
    parent = asl_workspace / STAGING
    parent.mkdir(parents=True)
    live = parent / "run-4194000-abcd1234"
    live.mkdir()
    (live / "half.jpg").write_bytes(b"x")
    with lock_held_elsewhere(Path(str(live) + ".lock")):
        with staging_dir() as stage:
            assert Path(stage).is_dir() and (live / "half.jpg").exists()


def test_a_fifo_in_a_class_folder_is_quarantined_not_skipped(
    asl_workspace: Path, tmp_path: Path, sample_dir: Path
) -> None:
    root = tmp_path / "src"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        shutil.copyfile(sorted((sample_dir / cls).glob("*.jpg"))[0], root / cls / "first.jpg")
    os.mkfifo(root / "A" / "pipe.jpg")
    os.mkfifo(root / "B" / ".hidden_pipe")  # hidden (litter) but still not a file to store
    out = validate_raw(root, min_per_class=1, report_dir=tmp_path / "rep", progress=False)
    report = json.loads(Path(out["report_path"]).read_text())
    reasons = {q["path"]: q["reason"] for q in report["quarantined"]}
    assert reasons == {"A/pipe.jpg": "not_a_regular_file", "B/.hidden_pipe": "not_a_regular_file"}
    assert report["summary"]["total"] == len(CLASSES) + 2
    scan = (tmp_path / "rep" / "scan.csv").read_text()
    assert "A/pipe.jpg is a named pipe (FIFO)" in scan
    stored = {f.path for f in get_store().get(dataset_id=out["raw_dataset_id"]).files}
    assert stored == {f"{cls}/first.jpg" for cls in CLASSES}


def test_a_leftover_of_another_pid_namespace_is_judged_by_age_not_by_its_pid(
    tmp_path: Path,
) -> None:
    """A writer in a container sharing the workspace has a pid that may name no process here:
    judged by that pid, its live temp file was deleted under it. Its name carries its pid
    namespace; another namespace's leftover is removed only once a day old."""
    from asl_recognition.store.base import FOREIGN_LEFTOVER_S, pid_namespace, remove_stale

    dead = _killed("import os, signal; print(os.getpid(), flush=True); os.kill(os.getpid(), 9)")
    here, foreign = pid_namespace(), pid_namespace() + 1
    ours = tmp_path / f".put.tmp{dead}n{here}_ab"  # a writer of this namespace killed
    live = tmp_path / f".put.tmp{dead}n{foreign}_cd"  # a container's writer, still at work
    old = tmp_path / f".put.tmp{dead}n{foreign}_ef"  # a container's writer killed yesterday
    for path in (ours, live, old):
        path.write_bytes(b"x")
    stamp = time.time() - FOREIGN_LEFTOVER_S - 60
    os.utime(old, (stamp, stamp))
    assert sorted(remove_stale(tmp_path.iterdir(), ".tmp")) == sorted([ours, old])
    assert live.exists()


@pytest.mark.parametrize("marker_name", [".x.json.tmp", "asl_publish_3kd8x", "a.tmp12b"])
def test_names_without_a_pid_are_left_alone(tmp_path: Path, marker_name: str) -> None:
    from asl_recognition.store.base import remove_stale

    (tmp_path / marker_name).write_text("x")
    marker = "asl_publish_" if marker_name.startswith("asl_publish_") else ".tmp"
    assert remove_stale(tmp_path.iterdir(), marker) == []

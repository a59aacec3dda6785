"""validate_raw runs that overlap on one zip, or die mid-way: real task processes on a real zip.

Two runs on the same archive in one workspace must each see every member (neither may wipe the
other's extraction) and write their own report; a run killed with SIGKILL leaves an extraction
that the next run never trusts and removes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from asl_recognition.classes import CLASSES
from asl_recognition.hashing import sha256_file
from asl_recognition.paths import REPO_ROOT
from asl_recognition.store import get_store

PER_CLASS = 10
FILES = PER_CLASS * len(CLASSES)
DEADLINE_S = 120


@pytest.fixture
def frames_zip(tmp_path: Path, sample_dir: Path) -> Path:
    """``PER_CLASS`` real frames of every class, under one wrapper folder as Kaggle ships them."""
    archive = tmp_path / "frames.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for cls in CLASSES:
            for src in sorted((sample_dir / cls).glob("*.jpg"))[:PER_CLASS]:
                zf.write(src, f"asl_train/{cls}/{src.name}")
    return archive


def _start(archive: Path, env: dict[str, str], outputs: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "tasks/validate_raw.py", "--source", str(archive)]
        + ["--min-per-class", str(PER_CLASS)],
        cwd=REPO_ROOT,
        env={**env, "ASL_STEP_OUTPUTS": str(outputs)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _extracted(workspace: Path, archive: Path) -> list[Path]:
    """The complete extraction folders of ``archive`` (named by its hash) in the workspace."""
    key = sha256_file(archive)[:16]  # a run's own folder, or an older version's at the top
    # not rglob: its walk entered a stage folder as the extraction renamed it (FileNotFoundError)
    found = [*(workspace / "extracted").glob(f"*/{key}"), workspace / "extracted" / key]
    return [p for p in found if p.is_dir()]


def _wait_extracted(workspace: Path, archive: Path, proc: subprocess.Popen) -> Path:
    deadline = time.monotonic() + DEADLINE_S
    while not (found := _extracted(workspace, archive)):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before extracting: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "the run never extracted the zip"
        time.sleep(0.01)
    return found[0]


def _finished(proc: subprocess.Popen, outputs: Path) -> dict:
    _, stderr = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(outputs.read_text())


def _zip_hashes(archive: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        return sorted(hashlib.sha256(zf.read(n)).hexdigest() for n in zf.namelist())


def _assert_whole_archive_published(recorded: dict, archive: Path) -> list[tuple[str, str]]:
    assert (recorded["valid"], recorded["quarantined"]) == (FILES, 0), recorded
    version = get_store().get(dataset_id=recorded["raw_dataset_id"])
    assert sorted(f.sha256 for f in version.files) == _zip_hashes(archive)
    return sorted((f.path, f.sha256) for f in version.files)


@pytest.mark.slow
def test_two_runs_on_one_zip_each_publish_every_file_and_their_own_report(
    task_env: dict[str, str], asl_workspace: Path, frames_zip: Path, tmp_path: Path
) -> None:
    outputs = [tmp_path / "first.json", tmp_path / "second.json"]
    # started together, each extracts while the other extracts or scans
    first = _start(frames_zip, task_env, outputs[0])
    second = _start(frames_zip, task_env, outputs[1])
    recorded = [_finished(first, outputs[0]), _finished(second, outputs[1])]

    contents = [_assert_whole_archive_published(r, frames_zip) for r in recorded]
    assert contents[0] == contents[1]
    assert recorded[0]["report_path"] != recorded[1]["report_path"]
    for out in recorded:  # each report is its own run's, not the one that finished last
        report = json.loads(Path(out["report_path"]).read_text())
        assert report["raw_dataset_id"] == out["raw_dataset_id"]
        assert report["summary"]["total"] == FILES
        assert Path(out["report_path"]).is_relative_to(asl_workspace / "reports" / "ASL_raw")
    assert list((asl_workspace / "extracted").iterdir()) == []  # both removed their own


@pytest.mark.slow
def test_a_killed_runs_extraction_is_never_trusted_and_is_removed(
    task_env: dict[str, str], asl_workspace: Path, frames_zip: Path, tmp_path: Path
) -> None:
    killed = _start(frames_zip, task_env, tmp_path / "killed.json")
    left = _wait_extracted(asl_workspace, frames_zip, killed)
    killed.kill()  # SIGKILL: no finally, no cleanup
    killed.communicate()
    assert left.is_dir()
    shutil.rmtree(next(left.glob("*/space")))  # a leftover must never pass for the archive
    legacy = asl_workspace / "extracted" / sha256_file(frames_zip)[:16]  # an older version's
    if not legacy.exists():
        shutil.copytree(left, legacy)

    recorded = _finished(
        _start(frames_zip, task_env, tmp_path / "next.json"), tmp_path / "next.json"
    )
    _assert_whole_archive_published(recorded, frames_zip)
    assert not left.exists() and not legacy.exists()
    assert list((asl_workspace / "extracted").iterdir()) == []

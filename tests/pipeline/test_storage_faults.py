"""A full disk and a read-only workspace, made real with small tmpfs mounts (root only).

Each program ends with one line naming the workspace, exit 2, no traceback; a version that could
not be written completely is not listed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from asl_testkit.cli import run_script

from asl_recognition.store import get_store

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
def test_a_full_disk_is_one_line_and_leaves_no_half_version(tmp_path):
    with tmpfs(tmp_path / "full", "1500k") as workspace:
        result = run_script("tasks/validate_raw.py", env=env_with(workspace))
        assert_one_line(result, "validate_raw")
        assert "No space left on device" in result.stderr
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ASL_WORKSPACE", str(workspace))
            assert get_store("local").list_versions("ASL_raw") == []

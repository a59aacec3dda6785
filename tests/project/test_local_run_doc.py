"""docs/local-run.md, read by a new user on a fresh clone: its workspace table names the folders
the commands really write (it named ``asl_recognition/monitoring/`` for ``make monitor``, which
writes ``<workspace>/monitoring``), and its account of ``make run`` names every source the recipe
merges (it said two; configs/run.yaml merges three)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from asl_recognition.paths import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "local-run.md"


def workspace_rows() -> list[str]:
    """The first cell of each row of the "Where the outputs land" table (paths under it)."""
    section = PAGE.read_text().split("## Where the outputs land", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)`", section, flags=re.M)


def test_the_workspace_table_names_the_folder_make_monitor_writes(tmp_path: Path) -> None:
    env = {**os.environ, "ASL_WORKSPACE": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "asl_recognition.monitoring.stack", "--render-only"]
        + ["--baseline", "none"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = [Path(p) for p in re.findall(r"(/\S+\.yml)", done.stdout + done.stderr)]
    assert written, done.stdout + done.stderr
    rows = workspace_rows()
    for path in written:
        top = path.relative_to(tmp_path).parts[0] + "/"
        assert top in rows, f"{top} (make monitor writes {path}) is not in {PAGE.name}'s table"


def test_the_make_run_account_names_every_source_the_recipe_merges() -> None:
    recipe = yaml.safe_load((REPO_ROOT / "configs" / "run.yaml").read_text())
    text = PAGE.read_text().split("## Where the outputs land", 1)[0]
    for source in recipe["validate_raw"]["source"]:
        folder = source.split("=", 1)[-1]
        assert f"`{folder}`" in text, f"{folder} ({source}) is not named in {PAGE.name}"

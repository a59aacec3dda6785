"""`make run` end to end on a fresh clone: no ClearML server, no ../shared, bundled images only.

The clone reuses this checkout's virtualenv (a symlink) and skips the install step, so the test
measures the main job, not pip. It needs every stage committed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from asl_recognition.paths import REPO_ROOT, SAMPLE_TEST_IMAGES
from asl_recognition.pipeline.dag import ASL_DAG

LIMIT_S = 600


@pytest.mark.slow
def test_make_run_on_fresh_clone(tmp_path):
    if not shutil.which("make") or not shutil.which("git"):
        pytest.skip("make and git are needed")
    clone = tmp_path / "checkout" / "asl"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    assert not (clone.parent.parent / "shared").exists()
    (clone / ".venv").symlink_to(REPO_ROOT / ".venv")
    (clone / ".cache").symlink_to(REPO_ROOT / ".cache")  # the verified hand models, as installed
    ws = tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "ASL_"))}
    env.update(ASL_WORKSPACE=str(ws), HOME=str(tmp_path))
    started = time.monotonic()
    result = subprocess.run(
        ["make", "-o", "install", "run"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT_S + 300,
    )
    took = time.monotonic() - started
    out = result.stdout
    (tmp_path / "make_run.log").write_text(out + "\n--- stderr ---\n" + result.stderr)
    assert result.returncode == 0, result.stderr[-4000:]

    # 1. the full DAG ran
    steps = [s.name for s in ASL_DAG.steps]  # the make-run recipe runs every step
    for n, step in enumerate(steps, 1):
        assert f"==> [{n}/{len(steps)}] {step}" in out
    assert "Pipeline run" in out and ": completed" in out
    # 2-3. the served production model classified every bundled test image through client.py
    images = sorted(p.name for p in SAMPLE_TEST_IMAGES.iterdir())
    answer = r"^\S+\.jpg: (\S+ [01]\.\d{4}|no hand found)"
    lines = [line for line in out.splitlines() if re.match(answer, line)]
    assert sorted(Path(line.split(":")[0]).name for line in lines) == images
    assert re.search(r"test images classified correctly: \d+/28", out)
    # 4. every location printed exists
    for label in ("validation report", "training run", "production model", "triton repository"):
        assert label in out
    for path in re.findall(r"(/\S+\.(?:zip|jsonl?|onnx|txt))(?!\w)", out):
        assert Path(path).exists(), path
    zips = re.findall(r"(/\S+\.zip)", out)
    assert len(zips) >= 5 and all(str(ws) in z for z in zips)
    assert f"ASL_WORKSPACE={ws} .venv/bin/python -m asl_recognition.offline_import" in out
    assert took < LIMIT_S, f"make run took {took:.0f} s"

"""A run killed (SIGKILL, the OOM killer) after writing ``best.pt`` and before ``last.pt`` can
be resumed: ``best.pt`` then holds a later epoch than ``last.pt`` names, and every ``--resume``
had been refused ("not this run's best checkpoint; start a new run"). Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from asl_recognition.paths import REPO_ROOT

# Fault injection, loaded by the child through PYTHONPATH: SIGKILL as last.pt of the final
# epoch starts to be written, i.e. after that epoch's best.pt was renamed into place.
KILLER = """
import os, signal, torch
_save = torch.save
def save(obj, f, *args, **kwargs):
    if ".last.pt.tmp" in str(f) and isinstance(obj, dict) and obj.get("epoch") == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(obj, f, *args, **kwargs)
torch.save = save
"""
OPTIONS = ["--model", "cnn", "--batch-size", "32", "--augment", "none", "--external", "none"]


def _load(run_dir: Path, name: str) -> dict:
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)


def _train(run_dir: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "tasks/train.py", *OPTIONS, "--epochs", "3", "--no-register"]
    return subprocess.run(
        [*command, "--output-dir", str(run_dir), *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_run_killed_between_its_two_checkpoints_resumes(published, tmp_path) -> None:
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(KILLER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_API")}
    env.update(CLEARML_OFFLINE_MODE="1", PYTHONPATH=str(tmp_path / "inject"))
    run_dir = tmp_path / "run"
    assert _train(run_dir, env).returncode == -9
    # the state the kill leaves: best.pt of epoch 3, last.pt of epoch 1
    assert _load(run_dir, "best.pt")["epoch"] == 3 > _load(run_dir, "last.pt")["epoch"]
    env.pop("PYTHONPATH")
    resumed = _train(run_dir, env, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    last = _load(run_dir, "last.pt")
    assert last["epoch"] == 3 and _load(run_dir, "best.pt")["epoch"] == last["best_epoch"]
    assert (run_dir / "model.onnx").is_file()

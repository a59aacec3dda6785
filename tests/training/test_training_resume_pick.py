"""``--resume`` without ``--output-dir`` continues the newest run that was interrupted, not the
newest run: a run finished since (a pipeline's) had been picked, trained nothing and was
registered a second time, while the run killed with ``kill -9`` was never resumed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from asl_testkit.published import train_options

from asl_recognition.paths import REPO_ROOT
from asl_recognition.registry import get_registry
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.run import run_training

FAST = {"model": "cnn", "batch_size": 32, "augment": "none", "external": "none"}


def _killed_after_its_first_checkpoint(ws) -> None:
    """A real ``tasks/train.py`` run, SIGKILLed once its first ``last.pt`` is on disk."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(ws), ASL_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    argv = ["--model", "cnn", "--batch-size", "32", "--augment", "none", "--external", "none"]
    argv += ["--epochs", "200", "--patience", "0", "--max-steps", "1"]
    proc = subprocess.Popen(
        [sys.executable, "tasks/train.py", *argv], cwd=REPO_ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list(ws.glob("runs/train-cnn-*/checkpoints/last.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_resume_picks_the_interrupted_run_not_a_finished_one(published, workspace_env) -> None:
    _killed_after_its_first_checkpoint(workspace_env)
    (killed,) = workspace_env.glob("runs/train-cnn-*")
    time.sleep(0.05)  # a later mtime for the finished run's checkpoints
    finished = run_training(train_options(**FAST, epochs=1, max_steps=1))
    assert len(get_registry().list("asl")) == 1

    epochs = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["epoch"] + 1
    out = run_training(train_options(**FAST, epochs=epochs, max_steps=1, resume=True))
    assert out["run_dir"] == str(killed) != finished["run_dir"]
    assert (killed / "model.onnx").is_file()
    assert len(get_registry().list("asl")) == 2  # the killed run's model, once


def test_a_finished_run_copied_without_its_mtimes_is_not_resumed(
    published, workspace_env, monkeypatch
) -> None:
    """``cp -r`` of a workspace gives every file a new mtime in copy order: a finished run
    whose ``metrics.json`` was copied before its ``last.pt`` was taken for an interrupted one,
    and ``--resume`` trained nothing and registered its model a second time."""
    finished = run_training(train_options(**FAST, epochs=1, max_steps=1))
    copy = workspace_env.parent / "copied"
    shutil.copytree(workspace_env, copy, copy_function=shutil.copyfile, symlinks=True)
    run = copy / Path(finished["run_dir"]).relative_to(workspace_env)
    last = run / "checkpoints" / "last.pt"
    older = last.stat().st_mtime_ns - 10**9
    os.utime(run / "metrics.json", ns=(older, older))  # as a copy that took it first leaves it
    monkeypatch.setenv("ASL_WORKSPACE", str(copy))
    with pytest.raises(TrainingInputError, match="no unfinished cnn run"):
        run_training(train_options(**FAST, epochs=1, max_steps=1, resume=True))
    assert len(get_registry().list("asl")) == 1

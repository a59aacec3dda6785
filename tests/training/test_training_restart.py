"""A run folder whose run stopped before its first checkpoint (``kill -9`` or Ctrl-C in the first
epoch, a first epoch that diverged) can be started again: before, a new run there was refused
("pass --resume") and ``--resume`` too ("no checkpoint"). Real runs on real images."""

from __future__ import annotations

import pytest
import torch
from asl_testkit.files import assert_one_line
from asl_testkit.published import train_options

from asl_recognition.classes import CLASSES
from asl_recognition.training.errors import NonFiniteLossError, TrainingInputError
from asl_recognition.training.models import build_model
from asl_recognition.training.run import run_training

FAST = {"model": "cnn", "batch_size": 32, "augment": "none", "external": "none", "epochs": 1}


def _stopped_in_its_first_epoch(tmp_path):
    """The folder a first epoch that never reached its checkpoint leaves (NaN weights)."""
    weights = tmp_path / "nan.pt"
    good = build_model("cnn", len(CLASSES), 32).backbone.state_dict()
    nan = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in good.items()}
    torch.save(nan, weights)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError):
        run_training(train_options(**FAST, weights=str(weights), output_dir=str(run_dir)))
    (run_dir / "checkpoints" / ".last.pt.tmp999999").write_bytes(b"half")  # a killed save
    return run_dir


def test_a_run_stopped_before_its_first_checkpoint_starts_again(published, tmp_path) -> None:
    run_dir = _stopped_in_its_first_epoch(tmp_path)
    assert {p.name for p in run_dir.iterdir()} == {".train.lock", "tensorboard", "checkpoints"}
    out = run_training(train_options(**FAST, output_dir=str(run_dir), register=False))
    assert out["run_dir"] == str(run_dir) and (run_dir / "model.onnx").is_file()
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_resume_there_says_to_start_again(published, tmp_path) -> None:
    run_dir = _stopped_in_its_first_epoch(tmp_path)
    with pytest.raises(TrainingInputError) as info:
        run_training(train_options(**FAST, output_dir=str(run_dir), resume=True))
    assert_one_line(str(info.value), "no checkpoint at", "again without --resume")


def test_a_folder_with_other_files_is_still_never_overwritten(published, tmp_path) -> None:
    run_dir = _stopped_in_its_first_epoch(tmp_path)
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(TrainingInputError) as info:
        run_training(train_options(**FAST, output_dir=str(run_dir)))
    assert_one_line(str(info.value), "already holds files", "nothing was overwritten")
    assert (run_dir / "notes.txt").read_text() == "mine"

"""--resume with another training recipe (seed, batch size, augmentation...) is refused: the
run had trained its first epochs with one recipe, the rest with another, and registered the
second as the whole run's. Real runs on real images."""

from __future__ import annotations

import pytest
import torch
from asl_testkit.files import assert_one_line
from asl_testkit.published import train_options

from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.run import run_training

FAST = {"model": "cnn", "batch_size": 32, "augment": "none", "external": "none", "epochs": 1}


@pytest.mark.parametrize(
    "change, said",
    [({"seed": 7}, "--seed 42"), ({"batch_size": 16}, "--batch-size 32")],
)
def test_resume_with_another_recipe_is_refused(published, tmp_path, change, said) -> None:
    run_dir = tmp_path / "run"
    run_training(train_options(**FAST, output_dir=str(run_dir), register=False))
    again = {**FAST, "epochs": 2, "output_dir": str(run_dir), "resume": True, "register": False}
    with pytest.raises(TrainingInputError) as info:
        run_training(train_options(**{**again, **change}))
    assert_one_line(str(info.value), said, "not trained with")
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    run_training(train_options(**again))  # the same recipe, more epochs: resumed
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2

"""ClearML task: train an ASL classifier on the published dataset, export ONNX, register it.

Bad input ends with a one-line ``train: error: ...`` message and exit status 1 (2 for an option
that does not fit), and overwrites nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.hands.models import ModelFileError
from asl_recognition.registry.base import ModelIntegrityError
from asl_recognition.tracking import TaskContext, task_entry
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.options import TrainOptions


@task_entry(
    TrainOptions,
    task_type="training",
    refused=(TrainingInputError, ModelFileError, ModelIntegrityError),
    refusal_code=1,
    name=lambda options: f"train {options.model}",
)
def main(ctx: TaskContext) -> dict:
    from asl_recognition.training.run import run_training

    return run_training(ctx.options, ctx=ctx)


if __name__ == "__main__":
    sys.exit(main())

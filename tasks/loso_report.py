"""ClearML task: the leave-one-source-out report of the recipe's landmark model.

For every group of one ASL_landmarks version (each source; each signer of ``--by-signer``
sources), the landmark MLP is trained with the recipe's train-step options on every other group
and scored on all rows of the left-out one: accuracy, hand-found rate, accuracy given a hand and
the worst classes, plus the mean and the worst group. Written as loso.json, loso.md (the table),
a bar chart and one confusion matrix per fold in a new folder per run under
``<workspace>/reports/loso/<landmarks id>/``, and logged to ClearML. Outputs: ``report``,
``mean_accuracy``, ``worst_group``, ``worst_accuracy``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.tracking import TaskContext, task_entry
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.options import LosoOptions


@task_entry(LosoOptions, task_type="qc", refused=(TrainingInputError,), refusal_code=1)
def main(ctx: TaskContext) -> dict:
    from asl_recognition.training.loso import run_loso

    return run_loso(ctx.options, ctx=ctx)


if __name__ == "__main__":
    sys.exit(main())

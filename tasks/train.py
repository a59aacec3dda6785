"""ClearML task: train an ASL classifier on the published dataset, export ONNX, register it.

Bad input ends with a one-line ``train: error: ...`` message and exit status 1 (2 for an option
that does not fit), and overwrites nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.options import parse
from asl_recognition.tracking import init_task
from asl_recognition.training.options import TrainOptions


def main(argv: list[str] | None = None) -> int:
    options = parse(TrainOptions, argv, __doc__)
    ctx = init_task("ASL", f"train {options.model}", options, task_type="training")
    from asl_recognition.training.errors import TrainingInputError
    from asl_recognition.training.run import run_training

    try:
        outputs = run_training(ctx.options, ctx=ctx)
    except TrainingInputError as exc:
        ctx.fail(f"train: error: {exc}", code=1)
    ctx.record_outputs(**outputs)
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

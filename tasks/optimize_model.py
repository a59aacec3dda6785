"""ClearML task: INT8 and graph-optimised variants of a registered model, compared with fp32.

Works on both exported classifiers: the CNN (images) and the landmark classifier (landmark rows;
the LiteRT hand-landmark network in front of it is not an ONNX graph and is not quantised).
INT8 is calibrated on a seeded sample of the model's own TRAIN split; both variants are
registered as new versions whose parent is the fp32 model. The comparison (test and held-out
accuracy, ms/image at each batch size measured in interleaved rounds, images/s served by the
local Triton at concurrency 8, file size) is written as report.json + report.md and logged as a
table and a bar plot; a profile of one training step and of one served request are kept as
artifacts. Outputs: ``report``, ``int8_model_id``, ``optimized_model_id``,
``int8_latency_ratio_b1``, ``int8_test_accuracy_delta``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.optimize.options import OptimizeOptions
from asl_recognition.optimize.variants import OptimizeError
from asl_recognition.tracking import TaskContext, task_entry


@task_entry(OptimizeOptions, task_type="custom", refused=(OptimizeError,), refusal_code=1)
def main(ctx: TaskContext) -> dict:
    from asl_recognition.optimize.run import run_optimize

    return run_optimize(ctx.options, ctx=ctx)


if __name__ == "__main__":
    sys.exit(main())

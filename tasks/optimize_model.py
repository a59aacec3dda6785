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
from asl_recognition.options import parse
from asl_recognition.tracking import init_task


def main(argv: list[str] | None = None) -> int:
    options = parse(OptimizeOptions, argv, __doc__)
    ctx = init_task("ASL", "optimize_model", options, task_type="custom")
    from asl_recognition.optimize.run import run_optimize
    from asl_recognition.optimize.variants import OptimizeError

    try:
        outputs = run_optimize(ctx.options, ctx=ctx)
    except OptimizeError as exc:
        ctx.fail(f"optimize_model: error: {exc}", code=1)
    ctx.record_outputs(**outputs)
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

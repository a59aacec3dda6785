"""ClearML task: promote the new model only if it beats the production model on a metric.

With a server the registry is ClearML's (tags, ``Model.query_models``, publish); offline it is
the local registry under ``<workspace>/registry``. The decision, both metrics and both confusion
matrices are logged either way. Outputs: ``production_model_id``, ``promoted``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.options import parse
from asl_recognition.pipeline.options import SelectBestOptions
from asl_recognition.pipeline.selection import Decision, log_decision, select_best
from asl_recognition.tracking import init_task


def main(argv: list[str] | None = None) -> int:
    options = parse(SelectBestOptions, argv, __doc__)
    ctx = init_task("ASL", "select_best", options, task_type="qc")
    opts: SelectBestOptions = ctx.options
    from asl_recognition.registry import get_registry

    registry = get_registry(backend=opts.registry)
    try:
        decision: Decision = select_best(
            registry,
            opts.model_id,
            opts.metric,
            opts.metric_mode,
            opts.name,
            holdout_tolerance=opts.holdout_tolerance if opts.holdout_gate else None,
            int8_tolerance=opts.int8_tolerance if opts.prefer_int8 else None,
        )
    except (LookupError, ValueError) as exc:
        ctx.fail(f"select_best: {exc}")
    print(f"select_best: {'PROMOTED' if decision.promoted else 'KEPT'}: {decision.reason}")
    print(f"production model: {decision.production_model_id}")
    log_decision(ctx.logger, decision)
    ctx.upload_artifact("decision", decision.as_dict())
    ctx.record_outputs(
        production_model_id=decision.production_model_id, promoted=decision.promoted
    )
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ClearML task: promote the new model only if it beats the production model on a metric.

With a server the registry is ClearML's (tags, ``Model.query_models``, publish); offline it is
the local registry under ``<workspace>/registry``. The decision, both metrics and both confusion
matrices are logged either way. Outputs: ``production_model_id``, ``promoted``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.pipeline.options import SelectBestOptions
from asl_recognition.pipeline.selection import log_decision, select_best
from asl_recognition.tracking import TaskContext, task_entry


@task_entry(SelectBestOptions, task_type="qc", refused=(LookupError, ValueError))
def main(ctx: TaskContext) -> dict:
    from asl_recognition.registry import get_registry

    opts: SelectBestOptions = ctx.options
    decision = select_best(get_registry(backend=opts.registry), opts)
    print(f"select_best: {'PROMOTED' if decision.promoted else 'KEPT'}: {decision.reason}")
    print(f"production model: {decision.production_model_id}")
    log_decision(ctx.logger, decision)
    ctx.upload_artifact("decision", decision.as_dict())
    return {"production_model_id": decision.production_model_id, "promoted": decision.promoted}


if __name__ == "__main__":
    sys.exit(main())

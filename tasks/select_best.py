"""ClearML task: promote the new model only if it beats the production model on a metric.

    python tasks/select_best.py --model-id ID [--metric val_macro_f1] [--mode max|min] [--name asl]
        [--holdout-tolerance X] [--no-holdout-gate]

With a server the registry is ClearML's (tags, ``Model.query_models``, publish); offline it is
the local registry under ``<workspace>/registry``. The decision, both metrics and both confusion
matrices are logged either way. Outputs: ``production_model_id``, ``promoted``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.pipeline.selection import confusion_matrix, select_best
from asl_recognition.registry.confusion import read_classes
from asl_recognition.tracking import init_task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-id", required=True, help="registry id of the newly trained model")
    parser.add_argument(
        "--metric",
        default="val_macro_f1",
        help="registry metric to compare (default val_macro_f1; e.g. test_accuracy)",
    )
    parser.add_argument(
        "--mode",
        choices=["max", "min"],
        default="max",
        help="max: a higher metric is better (default); min: lower is better (e.g. a loss)",
    )
    parser.add_argument("--name", default="asl", help="registered model name (default asl)")
    parser.add_argument(
        "--holdout-tolerance",
        type=float,
        default=0.0,
        help="quality gate: refuse a model whose accuracy on any held-out group (other signer "
        "or source) is more than this below production's (default 0.0)",
    )
    parser.add_argument(
        "--no-holdout-gate",
        action="store_true",
        help="compare on --metric only, ignoring held-out groups",
    )
    parser.add_argument(
        "--registry",
        choices=["auto", "local", "clearml"],
        default="auto",
        help="registry backend (default auto: ClearML with a server, local without)",
    )
    return parser


def log_decision(ctx, decision) -> None:
    """Decision text, both metric values and both confusion matrices in the task's log/plots."""
    logger = ctx.logger
    logger.report_text(
        f"select_best: {'PROMOTED' if decision.promoted else 'KEPT'}: {decision.reason}"
    )
    for label, value in (
        ("candidate", decision.candidate_value),
        ("production", decision.previous_value),
    ):
        if value is not None:
            logger.report_single_value(f"{decision.metric} ({label})", value)
    for label, record in (
        ("candidate", decision.candidate),
        ("previous production", decision.previous),
    ):
        if record is None:
            continue
        matrix = confusion_matrix(record, decision.metric)
        if matrix is None:
            logger.report_text(f"no confusion matrix found for {label} model {record.id}")
            continue
        labels = read_classes(record) or None
        if labels is not None and len(labels) != len(matrix):
            labels = None
        logger.report_confusion_matrix(
            title="confusion matrix",
            series=f"{label} {record.id}",
            matrix=matrix,
            iteration=0,
            xaxis="predicted",
            yaxis="true",
            xlabels=labels,
            ylabels=labels,
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ctx = init_task("ASL", "select_best", params=vars(args), task_type="qc")
    params = ctx.params
    from asl_recognition.registry import get_registry

    registry = get_registry(backend=params["registry"])
    try:
        gate_off = str(params["no_holdout_gate"]).lower() in ("1", "true", "yes")
        decision = select_best(
            registry,
            params["model_id"],
            params["metric"],
            params["mode"],
            params["name"],
            holdout_tolerance=None if gate_off else float(params["holdout_tolerance"]),
        )
    except (LookupError, ValueError) as exc:
        print(f"select_best: {exc}", file=sys.stderr)
        ctx.close()
        return 2
    print(f"select_best: {'PROMOTED' if decision.promoted else 'KEPT'}: {decision.reason}")
    print(f"production model: {decision.production_model_id}")
    log_decision(ctx, decision)
    ctx.upload_artifact("decision", decision.as_dict())
    ctx.record_outputs(
        production_model_id=decision.production_model_id, promoted=decision.promoted
    )
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

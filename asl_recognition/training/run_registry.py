"""What a finished training run hands on: its scores and files as ClearML artifacts, a new
registry version of the ``asl`` model, and the outputs the next pipeline step reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asl_recognition.options import as_params
from asl_recognition.training.checkpoints import BEST, LAST, checkpoint_path
from asl_recognition.training.run_files import Exported
from asl_recognition.training.run_inputs import Plan

if TYPE_CHECKING:
    from asl_recognition.registry.base import ModelRecord
    from asl_recognition.tracking import TaskContext

# The registry keeps these run metrics (select_best compares them, the status page shows them).
REGISTRY_METRICS = (
    "val_accuracy",
    "val_macro_f1",
    "test_accuracy",
    "test_macro_f1",
    "external_accuracy",
    "holdout_accuracy",
    "holdout_min_group_accuracy",
    "best_epoch",
    "epochs_run",
    "image_size",
    "val_confusion_matrix",
    "test_confusion_matrix",
    "untrained_classes",
)
SINGLE_VALUES = (
    "test_accuracy",
    "test_macro_f1",
    "val_macro_f1",
    "external_accuracy",
    "holdout_accuracy",
)
OUTPUT_METRICS = (
    "val_macro_f1",
    "test_accuracy",
    "test_macro_f1",
    "external_accuracy",
    "holdout_accuracy",
)


def report_to_clearml(ctx: TaskContext, metrics: dict[str, Any], exported: Exported) -> None:
    """Summary values and the run's files as task artifacts."""
    for key in SINGLE_VALUES:
        if metrics[key] is not None:
            ctx.logger.report_single_value(key, float(metrics[key]))
    untrained = metrics["untrained_classes"]
    ctx.logger.report_single_value("classes without train rows", len(untrained))
    if untrained:
        rows = [["class without train rows"], *([c] for c in untrained)]
        ctx.logger.report_table(
            title="classes without train rows", series="train", iteration=0, table_plot=rows
        )
    for path in (exported.onnx, exported.classes, exported.baseline, exported.metrics):
        ctx.upload_artifact(path.name, str(path))


def register(
    plan: Plan, metrics: dict[str, Any], exported: Exported, ctx: TaskContext | None
) -> ModelRecord:
    """A new version of the ``asl`` model: files, scores, options and dataset id."""
    from asl_recognition.registry import NewModel, get_registry

    registry_metrics: dict[str, Any] = {k: metrics[k] for k in REGISTRY_METRICS}
    registry_metrics["holdout"] = {
        group: {k: result[k] for k in ("accuracy", "macro_f1", "images")}
        for group, result in metrics["holdout"].items()
    }
    params = {k: v for k, v in as_params(plan.options).items() if k != "register"}
    if plan.meta.get("landmarks_id"):  # the exact ASL_landmarks version, not "latest"
        params["landmarks_id"] = plan.meta["landmarks_id"]
    # the checkpoint the exported graph was built from (--keep best or last)
    checkpoint = checkpoint_path(plan.run_dir, BEST if plan.options.keep == "best" else LAST)
    model = NewModel(
        name="asl",
        onnx_path=str(exported.onnx),
        classes_path=str(exported.classes),
        metrics=registry_metrics,
        params=params,
        dataset_id=plan.dataset.version.id,
        baseline_path=str(exported.baseline),
        checkpoint_path=str(checkpoint) if checkpoint.is_file() else None,
    )
    record = get_registry().register(model, task=ctx.task if ctx is not None else None)
    print(f"registered model asl v{record.version} ({record.id}, {record.backend})")
    return record


def step_outputs(
    plan: Plan, metrics: dict[str, Any], exported: Exported, record: ModelRecord | None
) -> dict[str, Any]:
    """The registered model (or the run's own files when not registered) and its scores."""
    return {
        "model_id": record.id if record is not None else None,
        "onnx_path": record.onnx_path if record is not None else str(exported.onnx),
        "classes_path": record.classes_path if record is not None else str(exported.classes),
        # the uploaded weights (ClearML registry): what another machine downloads
        "onnx_uri": record.onnx_uri if record is not None else None,
        "run_dir": str(plan.run_dir),
        **{key: metrics[key] for key in OUTPUT_METRICS},
    }

"""The trained model's final scores (val, test, the external folder, each held-out group) and
their TensorBoard and ClearML reports, made once at the last epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from torch import nn

from asl_recognition.training.evaluate import (
    evaluate_external,
    evaluate_groups,
    evaluate_split,
    holdout_labels,
)
from asl_recognition.training.landmark_run import measure_external
from asl_recognition.training.metrics import confusion_matrix
from asl_recognition.training.plots import confusion_matrix_figure
from asl_recognition.training.run_inputs import Plan, RunData


@dataclass
class Evaluation:
    """The best checkpoint's scores: val, test, the external folder and each held-out group."""

    val: dict[str, Any]
    test: dict[str, Any]
    external: dict[str, Any]
    groups: dict[str, dict[str, Any]]
    val_confusion: np.ndarray
    test_confusion: np.ndarray


def evaluate(plan: Plan, data: RunData, model: nn.Module) -> Evaluation:
    """Score the model on val, test, the external folder and every held-out group."""
    classes = plan.classes
    val = evaluate_split(model, data.val, classes)
    test = evaluate_split(model, data.test, classes)
    measure = None
    if plan.landmarks is not None:  # measured as the table was (its recorded detector)
        measure = partial(measure_external, detector=plan.meta.get("hand_detector"))
    external = evaluate_external(model, plan.external, classes, plan.image_size, measure=measure)
    groups = {}
    if data.holdout is not None:
        labels = holdout_labels(plan.dataset.manifest, data.holdout)
        groups = evaluate_groups(model, data.holdout, labels, classes)
    return Evaluation(
        val,
        test,
        external,
        groups,
        confusion_matrix(val["predictions"].preds, data.val.labels, len(classes)),
        confusion_matrix(test["predictions"].preds, data.test.labels, len(classes)),
    )


def log_evaluation(
    classes: list[str], evaluation: Evaluation, step: int, writer: Any, logger: Any
) -> None:
    """TensorBoard scalars and figures, and ClearML matrices and tables, at the last epoch."""
    log_tensorboard(writer, classes, evaluation, step)
    if logger is not None:
        log_clearml(logger, classes, evaluation, step)


def log_tensorboard(writer: Any, classes: list[str], evaluation: Evaluation, step: int) -> None:
    for group, result in evaluation.groups.items():
        writer.add_scalar(f"holdout/{group}/accuracy", result["accuracy"], step)
        writer.add_scalar(f"holdout/{group}/macro_f1", result["macro_f1"], step)
        matrix = np.asarray(result["confusion_matrix"])
        figure = confusion_matrix_figure(matrix, classes, f"held out: {group}")
        writer.add_figure(f"confusion_matrix/holdout {group}", figure, step)
    figure = confusion_matrix_figure(evaluation.test_confusion, classes, "test")
    writer.add_figure("confusion_matrix/test", figure, step)
    writer.add_scalar("test/accuracy", evaluation.test["metrics"]["accuracy"], step)
    writer.add_scalar("test/macro_f1", evaluation.test["metrics"]["macro_f1"], step)
    if evaluation.external["accuracy"] is not None:
        writer.add_scalar("external/accuracy", evaluation.external["accuracy"], step)


def log_clearml(logger: Any, classes: list[str], evaluation: Evaluation, step: int) -> None:
    matrices = [("test", evaluation.test_confusion)] + [
        (f"held out {group}", np.asarray(result["confusion_matrix"]))
        for group, result in evaluation.groups.items()
    ]
    for series, matrix in matrices:
        logger.report_confusion_matrix(
            title="confusion matrix",
            series=series,
            matrix=matrix,
            iteration=step,
            xaxis="predicted",
            yaxis="true",
            xlabels=classes,
            ylabels=classes,
        )
    for split, result in (("val", evaluation.val), ("test", evaluation.test)):
        logger.report_table(
            title="per-class precision/recall/F1",
            series=split,
            iteration=step,
            table_plot=result["table"],
        )

"""Classification metrics from torchmetrics (no hand-written accuracy/F1 arithmetic)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

CONFIDENCE_BUCKETS = [round(0.1 * i, 1) for i in range(1, 11)]


def epoch_metrics(num_classes: int) -> MetricCollection:
    """Accuracy (micro: share of correct images) and macro-F1 (every class counts the same)."""
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes=num_classes, average="macro"),
        }
    )


def summarise(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, float]:
    """accuracy + macro-F1 of predicted class indices against targets."""
    if targets.numel() == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    metrics = epoch_metrics(num_classes)
    metrics.update(preds, targets)
    return {k: float(v) for k, v in metrics.compute().items()}


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class (counts)."""
    metric = MulticlassConfusionMatrix(num_classes=num_classes)
    return metric(preds, targets).cpu().numpy().astype(np.int64)


def per_class_table(
    preds: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]
) -> pd.DataFrame:
    """Per-class precision / recall / F1 / support, the table ClearML shows next to the matrix."""
    n = len(classes)
    precision = MulticlassPrecision(num_classes=n, average=None)(preds, targets)
    recall = MulticlassRecall(num_classes=n, average=None)(preds, targets)
    f1 = MulticlassF1Score(num_classes=n, average=None)(preds, targets)
    support = torch.bincount(targets, minlength=n)
    return pd.DataFrame(
        {
            "class": list(classes),
            "precision": precision.numpy().round(4),
            "recall": recall.numpy().round(4),
            "f1": f1.numpy().round(4),
            "support": support.numpy(),
        }
    )


def confidence_histogram(probabilities: torch.Tensor) -> dict[str, list[float]]:
    """Counts of top-1 confidence in buckets with upper edges 0.1..1.0 (Prometheus-style)."""
    top1 = probabilities.max(dim=1).values.double().numpy() if len(probabilities) else np.array([])
    counts, _ = np.histogram(np.clip(top1, 0.0, 1.0), bins=[0.0] + CONFIDENCE_BUCKETS)
    return {"buckets": CONFIDENCE_BUCKETS, "counts": [int(c) for c in counts]}

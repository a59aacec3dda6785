"""Matplotlib figures for TensorBoard/ClearML: the confusion matrix and labelled sample images."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def confusion_matrix_figure(matrix: np.ndarray, classes: Sequence[str], title: str) -> plt.Figure:
    """Row-normalised so that rare classes are as readable as common ones; counts in the title."""
    totals = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, np.maximum(totals, 1), dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=80)
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(classes)), labels=list(classes), rotation=90, fontsize=6)
    ax.set_yticks(range(len(classes)), labels=list(classes), fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} ({int(matrix.sum())} images, {int(np.trace(matrix))} correct)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def sample_grid_figure(
    images: torch.Tensor,
    preds: Sequence[int],
    targets: Sequence[int],
    classes: Sequence[str],
    columns: int = 8,
) -> plt.Figure:
    """uint8 [N,3,H,W] images titled ``pred/true`` (red when wrong)."""
    n = len(images)
    rows = max(1, (n + columns - 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.35), dpi=80)
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        pred, true = classes[int(preds[i])], classes[int(targets[i])]
        ax.set_title(f"{pred}/{true}", fontsize=7, color="green" if pred == true else "red")
    fig.suptitle("predicted/true", fontsize=8)
    fig.tight_layout()
    return fig

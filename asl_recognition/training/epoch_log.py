"""What the training loop reports each epoch: TensorBoard scalars, and the val figures.

Scalars are cheap and written every epoch; the confusion matrix and sample grid cost ~1 s of
matplotlib each, so the loop draws them at most once a :data:`FIGURE_SECONDS` and at the end.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from asl_recognition.training.data import TensorSplit
from asl_recognition.training.metrics import confusion_matrix
from asl_recognition.training.plots import confusion_matrix_figure, sample_grid_figure

SAMPLE_IMAGES = 16
# The val figures (confusion matrix, sample grid) are drawn at most this often, and at the last
# epoch: each costs ~1 s of matplotlib, more than a whole epoch of the landmark MLP.
FIGURE_SECONDS = 60.0


class EpochLog:
    """The per-epoch logging of one run, to a TensorBoard ``writer`` and a ClearML logger."""

    def __init__(
        self,
        val: TensorSplit,
        classes: Sequence[str],
        writer: Any = None,
        clearml_logger: Any = None,
    ) -> None:
        self.val_split = val
        self.classes = list(classes)
        self.writer = writer
        self.clearml_logger = clearml_logger
        shown = min(SAMPLE_IMAGES, len(val))
        self.sample_index = torch.linspace(0, len(val) - 1, shown).round().long()

    def scalars(self, epoch: int, row: dict[str, Any]) -> None:
        """The epoch's losses, scores and learning rate (cheap: every epoch)."""
        if self.writer is None:
            return
        for split in ("train", "val"):
            for key in ("loss", "accuracy", "macro_f1"):
                self.writer.add_scalar(f"{key}/{split}", row[f"{split}_{key}"], epoch)
            self.writer.add_scalar(f"lr/{split}", row["lr"], epoch)

    def figures(self, epoch: int, val_preds: torch.Tensor) -> None:
        """The val confusion matrix and sample grid: ~1 s of matplotlib each time, so drawn at
        most once a :data:`FIGURE_SECONDS` and at the last epoch (per epoch they were 90% of a
        landmark run's fit)."""
        matrix = confusion_matrix(val_preds, self.val_split.labels, len(self.classes))
        if self.writer is not None:
            self._tensorboard_figures(epoch, val_preds, matrix)
        if self.clearml_logger is not None:
            self.clearml_logger.report_confusion_matrix(
                title="confusion matrix",
                series="val",
                matrix=matrix,
                iteration=epoch,
                xaxis="predicted",
                yaxis="true",
                xlabels=self.classes,
                ylabels=self.classes,
            )

    def _tensorboard_figures(self, epoch: int, val_preds: torch.Tensor, matrix: Any) -> None:
        shown = self.sample_index
        if self.val_split.images.dim() == 4:  # pictures; landmark rows have none to show
            self.writer.add_figure(
                "samples/val",
                sample_grid_figure(
                    self.val_split.images[shown],
                    val_preds[shown].tolist(),
                    self.val_split.labels[shown].tolist(),
                    self.classes,
                ),
                epoch,
            )
        self.writer.add_figure(
            "confusion_matrix/val",
            confusion_matrix_figure(matrix, self.classes, f"val, epoch {epoch}"),
            epoch,
        )
        self.writer.flush()

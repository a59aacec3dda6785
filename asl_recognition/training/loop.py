"""The training loop: seeded, resumable, early-stopped on val macro-F1, logged per epoch.

Every epoch re-seeds from ``(seed, epoch)`` (:mod:`~asl_recognition.training.runtime`), so a
resumed run does the same arithmetic as one that never stopped; checkpoints are
:mod:`~asl_recognition.training.checkpoints`' job, the per-epoch reports
:mod:`~asl_recognition.training.epoch_log`'s.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from asl_recognition.training.checkpoints import (
    BEST,
    CHECKPOINT_SECONDS,
    LAST,
    check_resumable,
    checkpoint_path,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_atomic,
)
from asl_recognition.training.data import AugmentedImages, TensorSplit
from asl_recognition.training.epoch_log import FIGURE_SECONDS, EpochLog
from asl_recognition.training.errors import NonFiniteLossError, TrainingInputError
from asl_recognition.training.evaluate import predict
from asl_recognition.training.metrics import epoch_metrics, summarise
from asl_recognition.training.options import TrainOptions
from asl_recognition.training.runtime import epoch_seed, intra_op_threads, single_thread

WEIGHT_DECAY = 1e-4


@dataclass
class LoopConfig:
    """The loop's settings; the option values come from :class:`TrainOptions` only."""

    epochs: int
    batch_size: int
    lr: float
    seed: int
    patience: int
    max_steps: int | None
    num_workers: int
    device: str
    label_smoothing: float
    weight_decay: float = WEIGHT_DECAY
    progress: bool = True
    # torch intra-op threads while fitting (0: leave torch's count); a small MLP runs fastest
    # on one, as thread hand-offs cost more than its matrix products (bench/bench_train.py).
    threads: int = 0

    @classmethod
    def from_options(
        cls, options: TrainOptions, device: str = "cpu", progress: bool = True
    ) -> LoopConfig:
        """The loop settings of a run (``max_steps`` 0 means every batch)."""
        return cls(
            epochs=options.epochs,
            batch_size=options.batch_size,
            lr=options.lr,
            seed=options.seed,
            patience=options.patience,
            max_steps=options.max_steps or None,
            num_workers=options.num_workers,
            device=device,
            label_smoothing=options.label_smoothing,
            progress=progress,
        )


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    best_val_macro_f1: float
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    train_images: int = 0

    @property
    def throughput(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0


class Trainer:
    """Owns model, optimiser, scheduler and the per-epoch logging of one run."""

    def __init__(
        self,
        model: nn.Module,
        train: TensorSplit,
        val: TensorSplit,
        classes: Sequence[str],
        config: LoopConfig,
        run_dir: str | Path,
        transform: Callable | None = None,
        writer: Any = None,
        clearml_logger: Any = None,
        meta: dict[str, Any] | None = None,
        criterion: nn.Module | None = None,
        sample_weights: torch.Tensor | None = None,
        batch_augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if len(train) == 0 or len(val) == 0:
            raise TrainingInputError("training needs a non-empty train and val split")
        self.cfg = config
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.train_split, self.val_split = train, val
        self.classes = list(classes)
        self.transform = transform  # per item (images): one call per picture
        # Per batch (landmark rows): one call on the whole [B, ...] input tensor.
        self.batch_augment = batch_augment
        # Per-image draw weights (e.g. balanced across sources); None: a plain shuffle.
        self.sample_weights = sample_weights
        self.log = EpochLog(val, classes, writer, clearml_logger)
        self.meta = dict(meta or {})
        self.criterion = criterion or nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        # Plateau on val macro-F1: independent of --epochs, so resuming with more epochs is exact.
        # The floor (a quarter of --lr) is never reached within early stopping's default
        # patience; long runs without it (--patience 0) would stop learning after ~20 epochs.
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=0.5, patience=2, min_lr=config.lr / 4
        )
        self.last_path = checkpoint_path(run_dir, LAST)
        self.best_path = checkpoint_path(run_dir, BEST)
        self.last_path.parent.mkdir(parents=True, exist_ok=True)
        self.start_epoch = 0
        self.best_f1 = -1.0
        self.best_epoch = 0
        self.bad_epochs = 0
        self.metrics = epoch_metrics(len(self.classes))
        self.unsaved_best: dict[str, Any] | None = None  # best.pt's content until it is saved
        self.history: list[dict[str, Any]] = []

    # -- checkpoints -------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "best_f1": self.best_f1,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "classes": self.classes,
            "config": asdict(self.cfg),
            "meta": self.meta,
        }

    def resume(self, state: dict[str, Any] | None = None) -> int:
        """Continue from ``last.pt`` (or its ``state`` already checked by
        :func:`check_resumable`); returns the number of epochs already completed."""
        if state is None:
            state = check_resumable(self.last_path, self.classes, self.meta)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        self.start_epoch = int(state["epoch"])
        self.best_f1 = float(state["best_f1"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.history = list(state["history"])
        return self.start_epoch

    def load_best(self) -> None:
        """The best epoch's weights, as data only (see :func:`load_checkpoint`)."""
        state = load_checkpoint(self.best_path, self.device)
        if state.get("epoch") != self.best_epoch:  # a resume ended before its best was redone
            raise TrainingInputError(
                f"{self.best_path} holds epoch {state.get('epoch')}, not best epoch "
                f"{self.best_epoch}; resume with --epochs {state.get('epoch')} or more"
            )
        self.model.load_state_dict(state["model"])

    # -- data ----------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        images, batch_size = len(self.train_split), self.cfg.batch_size
        steps = images // batch_size if images > batch_size else 1
        return min(steps, self.cfg.max_steps) if self.cfg.max_steps else steps

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches, each through ``batch_augment`` when there is one."""
        for inputs, labels in self._drawn(epoch):
            if self.batch_augment is not None:
                inputs = self.batch_augment(inputs)
            yield inputs, labels

    def _drawn(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches from the in-memory tensors; workers only if asked (augmentation)."""
        generator = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch))
        split, batch_size = self.train_split, self.cfg.batch_size
        if self.cfg.num_workers > 0:
            sampler = (
                WeightedRandomSampler(self.sample_weights, len(split), generator=generator)
                if self.sample_weights is not None
                else None
            )
            loader = DataLoader(
                AugmentedImages(split, self.transform),
                batch_size=batch_size,
                shuffle=sampler is None,
                sampler=sampler,
                drop_last=len(split) > batch_size,
                num_workers=self.cfg.num_workers,
                generator=generator if sampler is None else None,
            )
            yield from loader
            return
        if self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, len(split), True, generator=generator)
        else:
            order = torch.randperm(len(split), generator=generator)
        for step in range(self.steps_per_epoch()):
            picked = order[step * batch_size : (step + 1) * batch_size]
            images = split.images[picked]
            if self.transform is not None:
                with single_thread():
                    images = torch.stack([self.transform(image) for image in images])
            yield images, split.labels[picked]

    def _diverged(self, what: str) -> NonFiniteLossError:
        """The one-line stop of a diverged run, naming the checkpoint it keeps."""
        kept = self.last_path if self.last_path.exists() else "none (first epoch)"
        lr = self.optimizer.param_groups[0]["lr"]
        return NonFiniteLossError(
            f"{what} (lr {lr:g}); training stopped, last good checkpoint: {kept}"
        )

    def _scores(self, preds: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Accuracy and macro-F1 (as :func:`summarise`) from one collection made once: building
        it took half of the ~10 ms each epoch's two scorings cost."""
        if labels.numel() == 0:
            return summarise(preds, labels, len(self.classes))
        self.metrics.reset()
        self.metrics.update(preds, labels)
        return {k: float(v) for k, v in self.metrics.compute().items()}

    # -- training ------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch))
        self.model.train()
        predicted: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        steps = self.steps_per_epoch()
        loss_sum, seen = 0.0, 0
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch}/{self.cfg.epochs}",
            unit="batch",
            disable=not self.cfg.progress,
            leave=True,
        )
        for step, (images, labels) in enumerate(self.batches(epoch)):
            if step >= steps:
                break
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            logits = self.model(images)
            loss = self.criterion(logits, labels)
            loss_value = float(loss.detach())  # the step's one device-to-host sync
            if not math.isfinite(loss_value):
                bar.close()
                raise self._diverged(f"loss became {loss_value} at epoch {epoch} step {step + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss_value * len(labels)
            seen += len(labels)
            predicted.append(logits.detach().argmax(1))
            targets.append(labels)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
        bar.close()
        # one metric computation per epoch (per step it cost a fifth of a small model's step)
        preds = torch.cat(predicted).cpu() if predicted else torch.zeros(0, dtype=torch.long)
        labels = torch.cat(targets).cpu() if targets else torch.zeros(0, dtype=torch.long)
        result = self._scores(preds, labels)
        result["loss"] = loss_sum / max(1, seen)
        result["images"] = seen
        return result

    def fit(self) -> FitResult:
        """Train until ``epochs`` or early stopping; ``best.pt`` holds the best val macro-F1.

        Runs on ``threads`` intra-op threads when the config names a count, restored after."""
        with intra_op_threads(self.cfg.threads):
            return self._fit()

    def _fit(self) -> FitResult:
        train_seconds, train_images = 0.0, 0
        stopped_early = bool(self.cfg.patience and self.bad_epochs >= self.cfg.patience)
        epoch = self.start_epoch
        figures_due = time.perf_counter() + FIGURE_SECONDS
        saves_due = time.perf_counter() + CHECKPOINT_SECONDS
        while epoch < self.cfg.epochs and not stopped_early:
            epoch += 1
            t0 = time.perf_counter()
            row, val_preds = self._run_epoch(epoch)
            train_seconds += time.perf_counter() - t0
            train_images += int(row.pop("images"))
            self.history.append(row)
            self.log.scalars(epoch, row)
            self._keep(epoch, row)
            if self.cfg.patience and self.bad_epochs >= self.cfg.patience:
                stopped_early = True
                print(f"early stopping: no val macro-F1 gain for {self.bad_epochs} epochs")
            final = stopped_early or epoch >= self.cfg.epochs
            if final or epoch == self.start_epoch + 1 or time.perf_counter() >= saves_due:
                self._checkpoint(epoch)
                saves_due = time.perf_counter() + CHECKPOINT_SECONDS
            if final or time.perf_counter() >= figures_due:
                self.log.figures(epoch, val_preds)
                figures_due = time.perf_counter() + FIGURE_SECONDS
        return FitResult(
            epochs_run=epoch,
            best_epoch=self.best_epoch,
            best_val_macro_f1=self.best_f1,
            stopped_early=stopped_early,
            history=self.history,
            train_seconds=train_seconds,
            train_images=train_images,
        )

    def _run_epoch(self, epoch: int) -> tuple[dict[str, Any], torch.Tensor]:
        """One epoch of training, then val only (what early stopping and ``keep`` need): its
        history row (with the images trained on) and the val predictions."""
        lr = float(self.optimizer.param_groups[0]["lr"])
        train = self.train_epoch(epoch)
        val_out = predict(
            self.model, self.val_split.images, self.val_split.labels, device=str(self.device)
        )
        if not math.isfinite(val_out.loss):  # the epoch's last step left the weights unusable
            raise self._diverged(f"val loss became {val_out.loss} after epoch {epoch}")
        val = self._scores(val_out.preds, self.val_split.labels)
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "train_macro_f1": train["macro_f1"],
            "val_loss": val_out.loss,
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "images": train["images"],
        }
        return row, val_out.preds

    def _keep(self, epoch: int, row: dict[str, Any]) -> None:
        """Step the scheduler and hold the weights of a val macro-F1 gain for ``best.pt``."""
        f1 = row["val_macro_f1"]
        self.scheduler.step(f1)
        if f1 > self.best_f1 + 1e-6:
            self.best_f1, self.best_epoch, self.bad_epochs = f1, epoch, 0
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.unsaved_best = {"epoch": epoch, "model": weights, "row": row, **self.meta}
        else:
            self.bad_epochs += 1
        print(
            f"epoch {epoch}: train loss {row['train_loss']:.4f}"
            f" acc {row['train_accuracy']:.3f}"
            f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}"
            f" macro-F1 {f1:.3f} | lr {row['lr']:.2e}",
            flush=True,
        )

    def _checkpoint(self, epoch: int) -> None:
        """``best.pt`` (when a gain is unsaved), then ``last.pt``: a ``last.pt`` on disk never
        names a best epoch whose weights are not."""
        if self.unsaved_best is not None:
            save_atomic(self.unsaved_best, self.best_path)
            self.unsaved_best = None
        save_atomic(self._state(epoch), self.last_path)

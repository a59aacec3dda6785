"""The training task's one entry point: dataset -> model -> checkpoints -> ONNX -> registry.

:func:`run_training` wires named stages, each a function of its own: prepare and load data
(:mod:`~asl_recognition.training.run_inputs`), train (here), evaluate and log
(:mod:`~asl_recognition.training.run_scores`), export (:mod:`~asl_recognition.training.run_files`)
and register (:mod:`~asl_recognition.training.run_registry`). Every input is checked before
anything is written, so a bad option, dataset, weights file or resume costs no files; outputs are
written to temporary names and renamed only after the ONNX parity gate passes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from torch import nn

from asl_recognition.training.augment import build_augment
from asl_recognition.training.checkpoints import LAST, check_resumable, checkpoint_path
from asl_recognition.training.data import source_balanced_weights
from asl_recognition.training.landmark_run import LANDMARK_THREADS, landmark_augment
from asl_recognition.training.loop import FitResult, LoopConfig, Trainer
from asl_recognition.training.options import TrainOptions
from asl_recognition.training.run_files import export, print_summary, record_run
from asl_recognition.training.run_inputs import Plan, RunData, held_run_dir, load_data, prepare
from asl_recognition.training.run_registry import register, report_to_clearml, step_outputs
from asl_recognition.training.run_scores import evaluate, log_evaluation

if TYPE_CHECKING:
    from asl_recognition.tracking import TaskContext


def run_training(options: TrainOptions, ctx: TaskContext | None = None) -> dict[str, Any]:
    """Train, evaluate, export and register; returns the outputs the next pipeline step reads.

    The run folder is held from before the data is read until the model is registered
    (:func:`held_run_dir`); a resumed run reads its checkpoint again once it holds it."""
    started = time.perf_counter()
    plan = prepare(options)
    with held_run_dir(plan.run_dir, options.resume):
        if options.resume:  # another run may have saved since prepare() read it
            last = checkpoint_path(plan.run_dir, LAST)
            plan.checkpoint = check_resumable(last, plan.classes, plan.meta, options.lr)
        if options.register:  # an unreadable registry refuses now, not after the training
            from asl_recognition.registry import get_registry

            get_registry().list("asl")
        return _run(plan, ctx, started)


def _run(plan: Plan, ctx: TaskContext | None, started: float) -> dict[str, Any]:
    data = load_data(plan)
    print(f"run dir: {plan.run_dir}")
    logger = ctx.logger if ctx is not None else None
    from torch.utils.tensorboard import SummaryWriter

    # purge_step: a resumed run drops the events logged after its checkpoint
    tensorboard = str(plan.run_dir / "tensorboard")
    with SummaryWriter(tensorboard, purge_step=plan.start_epoch + 1) as writer:
        fit, model = train(plan, data, writer, logger)
        evaluation = evaluate(plan, data, model)
        log_evaluation(plan.classes, evaluation, fit.epochs_run, writer, logger)
    exported = export(plan, data, model, evaluation)
    metrics = record_run(plan, data, fit, evaluation, exported, time.perf_counter() - started)
    print_summary(metrics)
    if ctx is not None:
        report_to_clearml(ctx, metrics, exported)
    record = register(plan, metrics, exported, ctx) if plan.options.register else None
    return step_outputs(plan, metrics, exported, record)


def train(plan: Plan, data: RunData, writer: Any, logger: Any) -> tuple[FitResult, nn.Module]:
    """Fit (resuming when asked) and return the best checkpoint's model on the CPU."""
    options = plan.options
    weights = None
    if options.balance == "source":
        weights = source_balanced_weights(plan.dataset.manifest, data.train)
    config = LoopConfig.from_options(options, plan.device)
    landmarks = plan.landmarks is not None
    if landmarks:
        config.threads = LANDMARK_THREADS
    trainer = Trainer(
        plan.model,
        data.train,
        data.val,
        plan.classes,
        config,
        plan.run_dir,
        transform=None if landmarks else build_augment(options.augment, plan.image_size),
        writer=writer,
        clearml_logger=logger,
        meta=plan.meta,
        sample_weights=weights,
        batch_augment=landmark_augment(options.augment) if landmarks else None,
    )
    if plan.checkpoint is not None:
        print(f"resuming {plan.run_dir} after epoch {trainer.resume(plan.checkpoint)}")
    fit = trainer.fit()
    if options.keep == "best":
        trainer.load_best()
    return fit, trainer.model.cpu()

"""The training task's one entry point: dataset -> model -> checkpoints -> ONNX -> registry.

:func:`run_training` wires named stages (prepare, load data, train, evaluate, log, export,
register), each a function of its own. Every input is checked before anything is written, so a
bad option, dataset, weights file or resume costs no files; outputs are written to temporary
names and renamed only after the ONNX parity gate passes.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from asl_recognition.classes import CLASSES, read_class_file, write_class_file
from asl_recognition.imageio import check_image_size
from asl_recognition.options import as_params
from asl_recognition.paths import workspace
from asl_recognition.training.augment import build_augment
from asl_recognition.training.checkpoints import (
    BEST,
    CHECKPOINT_DIR,
    LAST,
    check_resumable,
    checkpoint_path,
)
from asl_recognition.training.data import (
    PublishedDataset,
    TensorSplit,
    check_classes,
    load_split,
    open_published,
    source_balanced_weights,
)
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.evaluate import (
    evaluate_external,
    evaluate_groups,
    evaluate_split,
    holdout_accuracy,
    holdout_groups,
)
from asl_recognition.training.export import check_parity, export_onnx
from asl_recognition.training.landmark_run import (
    LANDMARK_MODEL,
    LANDMARK_THREADS,
    build_landmark_net,
    landmark_augment,
    landmark_splits,
    measure_external,
    open_landmarks,
)
from asl_recognition.training.loop import FitResult, LoopConfig, Trainer
from asl_recognition.training.metrics import confidence_histogram, confusion_matrix
from asl_recognition.training.models import build_model
from asl_recognition.training.options import TrainOptions, default_external
from asl_recognition.training.plots import confusion_matrix_figure
from asl_recognition.training.runtime import seed_everything

if TYPE_CHECKING:
    from asl_recognition.registry.base import ModelRecord
    from asl_recognition.tracking import TaskContext

RUNS = "runs"
FALLBACK_IMAGE_SIZE = 64  # a dataset that does not say its size
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


@dataclass
class Plan:
    """A run's checked inputs: nothing has been written when one exists."""

    options: TrainOptions
    device: str
    dataset: PublishedDataset
    image_size: int
    external: str | None
    model: nn.Module  # ASLClassifier, or LandmarkNet for --model landmarks
    run_dir: Path
    meta: dict[str, Any]  # kept in every checkpoint: architecture, size, classes, dataset
    checkpoint: dict[str, Any] | None  # --resume: the checked last.pt
    landmarks: Any = None  # --model landmarks: the ASL_landmarks table of ``dataset``

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def start_epoch(self) -> int:
        return int(self.checkpoint["epoch"]) if self.checkpoint else 0


@dataclass
class RunData:
    """The decoded splits of the dataset version (holdout only when it has one)."""

    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    holdout: TensorSplit | None

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass
class Evaluation:
    """The best checkpoint's scores: val, test, the external folder and each held-out group."""

    val: dict[str, Any]
    test: dict[str, Any]
    external: dict[str, Any]
    groups: dict[str, dict[str, Any]]
    val_confusion: np.ndarray
    test_confusion: np.ndarray


@dataclass
class Exported:
    """The files a run hands on, and the parity figures of its ONNX graph."""

    onnx: Path
    classes: Path
    baseline: Path
    metrics: Path
    parity: dict[str, Any]


def run_training(options: TrainOptions, ctx: TaskContext | None = None) -> dict[str, Any]:
    """Train, evaluate, export and register; returns the outputs the next pipeline step reads."""
    started = time.perf_counter()
    plan = prepare(options)
    data = load_data(plan)
    create_run_dir(plan.run_dir)
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
    record = register(plan, metrics, exported, ctx) if options.register else None
    return step_outputs(plan, metrics, exported, record)


# -- prepare: every check, nothing written ----------------------------------------------------
def prepare(options: TrainOptions) -> Plan:
    """Check the options against the machine, the dataset, the weights and the run folder."""
    device = resolve_device(options.device)
    dataset = open_published(options.dataset_version)
    source = options.classes or "the project's class list"
    check_classes(dataset.classes, expected_classes(options.classes), source)
    seed_everything(options.seed)  # before the model's random initialisation
    landmarks, identity = None, dataset.identity()
    if options.model == LANDMARK_MODEL:
        image_size = 0  # the model reads landmarks, not pixels
        landmarks, landmark_meta = open_landmarks(options.landmarks_version, dataset.version.id)
        identity["landmarks_id"] = landmark_meta["id"]
        model = build_landmark_net(dataset.classes, options.weights)
    else:
        image_size = options.image_size or dataset.image_size or FALLBACK_IMAGE_SIZE
        check_image_size(image_size, options.model, error=TrainingInputError)
        model = build_model(options.model, len(dataset.classes), image_size, options.weights)
    run_dir = choose_run_dir(options.output_dir, options.model, options.resume)
    meta = {
        "model_name": options.model,
        "image_size": image_size,
        "classes": dataset.classes,
        **identity,
    }
    checkpoint = None
    if options.resume:
        checkpoint = check_resumable(checkpoint_path(run_dir, LAST), dataset.classes, meta)
    external = None if options.external == "none" else (options.external or default_external())
    return Plan(
        options, device, dataset, image_size, external, model, run_dir, meta, checkpoint, landmarks
    )


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when present; asking for CUDA without one is refused."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingInputError("--device cuda asked for, but no CUDA device is available")
    return name


def expected_classes(path: str | None) -> list[str]:
    """The class list a dataset must have: the ``--classes`` file, else the project's."""
    if not path:
        return list(CLASSES)
    try:
        return read_class_file(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise TrainingInputError(f"--classes {path}: {reason}") from exc


def _latest_run(model: str) -> Path | None:
    runs = sorted(
        (workspace() / RUNS).glob(f"train-{model}-*/{CHECKPOINT_DIR}/{LAST}"),
        key=lambda p: p.stat().st_mtime,
    )
    return runs[-1].parents[1] if runs else None


def choose_run_dir(output_dir: str | None, model: str, resume: bool) -> Path:
    """The run folder; a finished or foreign run is never overwritten (nothing is created)."""
    if output_dir:
        run_dir = Path(output_dir).expanduser().resolve()
    elif resume:
        found = _latest_run(model)
        if found is None:
            raise TrainingInputError(
                f"--resume: no earlier {model} run under {workspace() / RUNS}"
            )
        run_dir = found
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_dir = workspace() / RUNS / f"train-{model}-{stamp}-{secrets.token_hex(2)}"
    if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise TrainingInputError(
            f"output dir {run_dir} already holds files; pass --resume to continue that run "
            "or choose another --output-dir (nothing was overwritten)"
        )
    return run_dir


def create_run_dir(run_dir: Path) -> None:
    """Create the run folder and prove it is writable (the first write of a run)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TrainingInputError(
            f"output dir {run_dir} is not writable: {exc.strerror or exc}"
        ) from exc


# -- load data --------------------------------------------------------------------------------
def load_data(plan: Plan) -> RunData:
    """Decode every split once at the run's image size (holdout when the version has one)."""
    started = time.perf_counter()
    root, classes, size = plan.dataset.root, plan.classes, plan.image_size
    if plan.landmarks is not None:
        with_holdout = plan.dataset.lists_holdout()
        landmarks_id = plan.meta.get("landmarks_id")
        data = RunData(*landmark_splits(plan.landmarks, classes, with_holdout, landmarks_id))
    else:
        splits = {s: load_split(root, s, classes, size) for s in plan.dataset.image_splits()}
        data = RunData(splits["train"], splits["val"], splits["test"], splits.get("holdout"))
    version = plan.dataset.version
    print(
        f"dataset {version.name} {version.version} ({version.id}): "
        + ", ".join(f"{s} {n}" for s, n in data.sizes().items())
        + (f", holdout {len(data.holdout)}" if data.holdout is not None else "")
        + (f" images at {size}px" if size else " landmark rows")
        + f", loaded in {time.perf_counter() - started:.1f}s"
    )
    untrained = untrained_classes(plan, data)
    if untrained:
        rows = "photos with a hand" if plan.landmarks is not None else "images"
        warnings.warn(
            f"no train {rows} for class(es) {', '.join(untrained)}: the model cannot answer "
            "them; the registry records it and select_best will not promote this model",
            stacklevel=2,
        )
    return data


def untrained_classes(plan: Plan, data: RunData) -> list[str]:
    """Classes the model claims but has no train row of (the landmark model answers
    ``nothing`` from the hand-found flag, so it needs none of those)."""
    counts = torch.bincount(data.train.labels, minlength=len(plan.classes)).tolist()
    answered = {"nothing"} if plan.landmarks is not None else set()
    return [c for c, n in zip(plan.classes, counts) if n == 0 and c not in answered]


# -- train ------------------------------------------------------------------------------------
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


# -- evaluate ---------------------------------------------------------------------------------
def evaluate(plan: Plan, data: RunData, model: nn.Module) -> Evaluation:
    """Score the model on val, test, the external folder and every held-out group."""
    classes = plan.classes
    val = evaluate_split(model, data.val, classes)
    test = evaluate_split(model, data.test, classes)
    measure = measure_external if plan.landmarks is not None else None
    external = evaluate_external(model, plan.external, classes, plan.image_size, measure=measure)
    groups = {}
    if data.holdout is not None:
        labels = holdout_groups(plan.dataset.manifest, data.holdout)
        groups = evaluate_groups(model, data.holdout, labels, classes)
    return Evaluation(
        val,
        test,
        external,
        groups,
        confusion_matrix(val["predictions"].preds, data.val.labels, len(classes)),
        confusion_matrix(test["predictions"].preds, data.test.labels, len(classes)),
    )


# -- log --------------------------------------------------------------------------------------
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


# -- export -----------------------------------------------------------------------------------
def export(plan: Plan, data: RunData, model: nn.Module, evaluation: Evaluation) -> Exported:
    """ONNX (kept only when it matches torch on every test image), class list and baseline."""
    run_dir = plan.run_dir
    onnx_tmp = run_dir / ".model.onnx.tmp"
    export_onnx(model, onnx_tmp, plan.image_size, num_classes=len(plan.classes))
    parity = check_parity(onnx_tmp, model, data.test.images)
    print(
        f"ONNX parity on {parity['images']} test images: "
        f"max abs diff {parity['max_abs_diff']:.2e}, "
        f"{parity['top1_mismatches']} top-1 mismatches"
    )
    onnx_path = run_dir / "model.onnx"
    os.replace(onnx_tmp, onnx_path)
    classes_path = run_dir / "classes.txt"
    write_class_file(str(classes_path), plan.classes)
    baseline_path = run_dir / "baseline.json"
    _write_json(baseline_path, drift_baseline(plan, data, evaluation))
    return Exported(onnx_path, classes_path, baseline_path, run_dir / "metrics.json", parity)


def drift_baseline(plan: Plan, data: RunData, evaluation: Evaluation) -> dict[str, Any]:
    """What monitoring compares live traffic with: class shares and val confidence."""
    probabilities = evaluation.val["predictions"].probabilities
    counts = torch.bincount(data.train.labels, minlength=len(plan.classes)).tolist()
    return {
        "model": plan.options.model,
        "image_size": plan.image_size,
        "classes": plan.classes,
        "class_distribution": {c: int(n) for c, n in zip(plan.classes, counts)},
        "confidence_histogram": confidence_histogram(probabilities),
        "mean_confidence": float(probabilities.max(1).values.mean()),
        "source": "top-1 softmax confidence of the best checkpoint on the val split",
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def record_run(
    plan: Plan,
    data: RunData,
    fit: FitResult,
    evaluation: Evaluation,
    exported: Exported,
    seconds: float,
) -> dict[str, Any]:
    """Write ``metrics.json``, the run record: scores, training course and data identity."""
    groups, external = evaluation.groups, evaluation.external
    manifest = plan.dataset.manifest
    metrics = {
        "val_accuracy": evaluation.val["metrics"]["accuracy"],
        "val_macro_f1": evaluation.val["metrics"]["macro_f1"],
        "test_accuracy": evaluation.test["metrics"]["accuracy"],
        "test_macro_f1": evaluation.test["metrics"]["macro_f1"],
        "external_accuracy": external["accuracy"],
        "external": {k: v for k, v in external.items() if k != "accuracy"},
        "holdout": groups,
        "holdout_accuracy": holdout_accuracy(groups),
        "holdout_min_group_accuracy": min((g["accuracy"] for g in groups.values()), default=None),
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "stopped_early": fit.stopped_early,
        "train_images_per_second": round(fit.throughput, 1),
        "wall_seconds": round(seconds, 1),
        "parity": exported.parity,
        "dataset_id": plan.dataset.version.id,
        "dataset_version": plan.dataset.version.version,
        "dataset_manifest_sha256": plan.dataset.manifest_sha256,
        "landmarks_id": plan.meta.get("landmarks_id"),
        "dataset_leaky": manifest.get("leaky"),
        "dataset_grouping": manifest.get("grouping"),
        "image_size": plan.image_size,
        "split_sizes": data.sizes(),
        "untrained_classes": untrained_classes(plan, data),
        "per_class_test": evaluation.test["table"].to_dict(orient="records"),
        "val_confusion_matrix": evaluation.val_confusion.tolist(),
        "test_confusion_matrix": evaluation.test_confusion.tolist(),
        "history": fit.history,
    }
    _write_json(exported.metrics, metrics)
    return metrics


def print_summary(metrics: dict[str, Any]) -> None:
    external = metrics["external"]
    accuracy = metrics["external_accuracy"]
    shown = "n/a" if accuracy is None else f"{accuracy:.3f} ({external['images']} images)"
    print(
        f"summary: val macro-F1 {metrics['val_macro_f1']:.3f} | test accuracy "
        f"{metrics['test_accuracy']:.3f} macro-F1 {metrics['test_macro_f1']:.3f} "
        f"(in-distribution Kaggle frames: inflated) | external accuracy {shown} | "
        f"{metrics['wall_seconds']}s"
    )
    for group, result in metrics["holdout"].items():
        print(
            f"held-out group {group}: accuracy {result['accuracy']:.3f} "
            f"macro-F1 {result['macro_f1']:.3f} ({result['images']} images)"
        )


# -- register ---------------------------------------------------------------------------------
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

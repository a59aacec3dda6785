"""The training task's one entry point: dataset -> model -> checkpoints -> ONNX -> registry.

Validates every input before writing anything, so a bad option costs no files; outputs are
written to temporary names and renamed only after the ONNX parity gate passes.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asl_recognition.classes import CLASSES, read_class_file, write_class_file
from asl_recognition.paths import REPO_ROOT, SHARED_DATA, workspace
from asl_recognition.training.augment import PRESETS, build_augment
from asl_recognition.training.data import (
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
from asl_recognition.training.loop import LAST, LoopConfig, Trainer, seed_everything
from asl_recognition.training.metrics import confidence_histogram, confusion_matrix
from asl_recognition.training.models import MODEL_NAMES, build_model, check_image_size
from asl_recognition.training.plots import confusion_matrix_figure

RUNS = "runs"


def default_external() -> str:
    """The Massey hands when the shared data is present, else the bundled 5-per-letter slice."""
    shared = SHARED_DATA / "asl_external_massey"
    return str(shared if shared.is_dir() else REPO_ROOT / "data" / "external_sample")


DEFAULTS: dict[str, Any] = {
    "dataset_version": "latest",
    "model": "cnn",
    "epochs": 30,
    "batch_size": 64,
    "lr": 2e-3,
    "image_size": 0,
    "augment": "light",
    "weights": None,
    "resume": False,
    "external": None,
    "seed": 42,
    "device": "auto",
    "patience": 6,
    "max_steps": 0,
    "output_dir": None,
    "num_workers": 0,
    "classes": None,
    "register": True,
    "label_smoothing": 0.0,
    "balance": "none",
}
BALANCE = ("none", "source")


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def normalise_params(params: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and coerce types (values edited in the ClearML UI come back as text)."""
    # Empty values (a pipeline passing "use the default", a blank UI field) take the default.
    given = {k: v for k, v in params.items() if v is not None and v != ""}
    p = {**DEFAULTS, **given}
    try:
        for key in ("epochs", "batch_size", "image_size", "seed", "patience", "max_steps"):
            p[key] = int(p[key] or 0)
        p["num_workers"] = int(p["num_workers"] or 0)
        p["lr"] = float(p["lr"])
        p["label_smoothing"] = float(p["label_smoothing"] or 0.0)
    except (TypeError, ValueError) as exc:
        raise TrainingInputError(f"bad numeric option: {exc}") from exc
    p["resume"] = _as_bool(p["resume"])
    p["register"] = _as_bool(p["register"])
    for key in ("weights", "output_dir", "external", "classes"):
        if p[key] in ("", "None"):
            p[key] = None
    if p["model"] not in MODEL_NAMES:
        raise TrainingInputError(f"unknown model {p['model']!r}; choose {', '.join(MODEL_NAMES)}")
    if p["augment"] not in PRESETS:
        raise TrainingInputError(f"unknown augment {p['augment']!r}; choose {', '.join(PRESETS)}")
    if p["epochs"] < 1 or p["batch_size"] < 1:
        raise TrainingInputError("--epochs and --batch-size must be at least 1")
    if p["balance"] not in BALANCE:
        raise TrainingInputError(f"unknown balance {p['balance']!r}; choose {', '.join(BALANCE)}")
    if not 0.0 <= p["label_smoothing"] < 1.0:
        raise TrainingInputError(
            f"--label-smoothing must be in [0, 1), got {p['label_smoothing']}"
        )
    if not p["lr"] > 0:
        raise TrainingInputError(f"--lr must be positive, got {p['lr']}")
    return p


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingInputError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise TrainingInputError(f"unknown device {name!r} (auto, cpu, cuda)")
    return name


def _latest_run(model: str) -> Path | None:
    runs = sorted(
        (workspace() / RUNS).glob(f"train-{model}-*/checkpoints/{LAST}"),
        key=lambda p: p.stat().st_mtime,
    )
    return runs[-1].parents[1] if runs else None


def prepare_run_dir(output_dir: str | None, model: str, resume: bool) -> Path:
    """Pick and probe the run folder; refuse to overwrite a finished or foreign run."""
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
    if resume and not (run_dir / "checkpoints" / LAST).is_file():
        raise TrainingInputError(f"--resume: no checkpoint at {run_dir / 'checkpoints' / LAST}")
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise TrainingInputError(
            f"output dir {run_dir} already holds files; pass --resume to continue that run "
            "or choose another --output-dir (nothing was overwritten)"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TrainingInputError(
            f"output dir {run_dir} is not writable: {exc.strerror or exc}"
        ) from exc
    return run_dir


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def run_training(params: dict[str, Any], ctx: Any = None) -> dict[str, Any]:
    """Train, evaluate, export and register; returns the step outputs (see the brief)."""
    started = time.perf_counter()
    p = normalise_params(params)
    device = resolve_device(p["device"])

    dataset = open_published(p["dataset_version"])
    expected = read_class_file(p["classes"]) if p["classes"] else list(CLASSES)
    check_classes(dataset.classes, expected, p["classes"] or "the project's class list")
    classes = dataset.classes
    image_size = p["image_size"] or dataset.image_size or 64
    check_image_size(p["model"], image_size)
    if p["weights"] and not Path(p["weights"]).is_file():
        raise TrainingInputError(f"weights file {p['weights']} does not exist")
    external = None if p["external"] == "none" else (p["external"] or default_external())
    run_dir = prepare_run_dir(p["output_dir"], p["model"], p["resume"])
    print(f"run dir: {run_dir}")

    seed_everything(p["seed"])
    model = build_model(p["model"], len(classes), image_size, p["weights"])
    t0 = time.perf_counter()
    splits = {
        s: load_split(dataset.root, s, classes, image_size) for s in ("train", "val", "test")
    }
    holdout = None
    if dataset.manifest.get("splits", {}).get("holdout") and (dataset.root / "holdout").is_dir():
        holdout = load_split(dataset.root, "holdout", classes, image_size)
    print(
        f"dataset {dataset.version.name} {dataset.version.version} ({dataset.version.id}): "
        + ", ".join(f"{s} {len(v)}" for s, v in splits.items())
        + (f", holdout {len(holdout)}" if holdout is not None else "")
        + f" images at {image_size}px, decoded in {time.perf_counter() - t0:.1f}s"
    )

    from torch.utils.tensorboard import SummaryWriter

    config = LoopConfig(
        epochs=p["epochs"],
        batch_size=p["batch_size"],
        lr=p["lr"],
        seed=p["seed"],
        patience=p["patience"],
        max_steps=p["max_steps"] or None,
        num_workers=p["num_workers"],
        device=device,
        label_smoothing=p["label_smoothing"],
    )
    weights = (
        source_balanced_weights(dataset.manifest, splits["train"])
        if p["balance"] == "source"
        else None
    )
    meta = {"model_name": p["model"], "image_size": image_size, "classes": classes}
    logger = ctx.logger if ctx is not None else None
    trainer = Trainer(
        model,
        splits["train"],
        splits["val"],
        classes,
        config,
        run_dir,
        transform=build_augment(p["augment"], image_size),
        clearml_logger=logger,
        meta=meta,
        sample_weights=weights,
    )
    if p["resume"]:
        done = trainer.resume()
        print(f"resuming {run_dir} after epoch {done}")
    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=trainer.start_epoch + 1)
    trainer.writer = writer
    try:
        fit = trainer.fit()
    finally:
        writer.flush()
    trainer.load_best()
    model = trainer.model.cpu()

    # -- evaluation --------------------------------------------------------------------------
    val_eval = evaluate_split(model, splits["val"], classes)
    test_eval = evaluate_split(model, splits["test"], classes)
    ext = evaluate_external(model, external, classes, image_size)
    groups = (
        evaluate_groups(model, holdout, holdout_groups(dataset.manifest, holdout), classes)
        if holdout is not None
        else {}
    )
    for group, result in groups.items():
        writer.add_scalar(f"holdout/{group}/accuracy", result["accuracy"], fit.epochs_run)
        writer.add_scalar(f"holdout/{group}/macro_f1", result["macro_f1"], fit.epochs_run)
        writer.add_figure(
            f"confusion_matrix/holdout {group}",
            confusion_matrix_figure(
                np.asarray(result["confusion_matrix"]), classes, f"held out: {group}"
            ),
            fit.epochs_run,
        )
    test_cm = confusion_matrix(test_eval["predictions"].preds, splits["test"].labels, len(classes))
    val_cm = confusion_matrix(val_eval["predictions"].preds, splits["val"].labels, len(classes))
    writer.add_figure(
        "confusion_matrix/test", confusion_matrix_figure(test_cm, classes, "test"), fit.epochs_run
    )
    for key, value in (
        ("test/accuracy", test_eval["metrics"]["accuracy"]),
        ("test/macro_f1", test_eval["metrics"]["macro_f1"]),
    ):
        writer.add_scalar(key, value, fit.epochs_run)
    if ext["accuracy"] is not None:
        writer.add_scalar("external/accuracy", ext["accuracy"], fit.epochs_run)
    writer.close()
    if logger is not None:
        logger.report_confusion_matrix(
            title="confusion matrix",
            series="test",
            matrix=test_cm,
            iteration=fit.epochs_run,
            xaxis="predicted",
            yaxis="true",
            xlabels=classes,
            ylabels=classes,
        )
        for group, result in groups.items():
            logger.report_confusion_matrix(
                title="confusion matrix",
                series=f"held out {group}",
                matrix=np.asarray(result["confusion_matrix"]),
                iteration=fit.epochs_run,
                xaxis="predicted",
                yaxis="true",
                xlabels=classes,
                ylabels=classes,
            )
        for split, result in (("val", val_eval), ("test", test_eval)):
            logger.report_table(
                title="per-class precision/recall/F1",
                series=split,
                iteration=fit.epochs_run,
                table_plot=result["table"],
            )

    # -- export + parity gate ------------------------------------------------------------------
    onnx_tmp = run_dir / ".model.onnx.tmp"
    export_onnx(model, onnx_tmp, image_size)
    parity = check_parity(onnx_tmp, model, splits["test"].images)
    print(
        f"ONNX parity on {parity['images']} test images: "
        f"max abs diff {parity['max_abs_diff']:.2e}, "
        f"{parity['top1_mismatches']} top-1 mismatches"
    )
    onnx_path = run_dir / "model.onnx"
    os.replace(onnx_tmp, onnx_path)
    classes_path = run_dir / "classes.txt"
    write_class_file(str(classes_path), classes)

    val_probs = val_eval["predictions"].probabilities
    train_counts = torch.bincount(splits["train"].labels, minlength=len(classes)).tolist()
    hist = confidence_histogram(val_probs)
    baseline = {
        "model": p["model"],
        "image_size": image_size,
        "classes": classes,
        "class_distribution": {c: int(n) for c, n in zip(classes, train_counts)},
        "confidence_histogram": hist,
        "mean_confidence": float(val_probs.max(1).values.mean()),
        "source": "top-1 softmax confidence of the best checkpoint on the val split",
    }
    baseline_path = run_dir / "baseline.json"
    _write_json(baseline_path, baseline)

    metrics = {
        "val_accuracy": val_eval["metrics"]["accuracy"],
        "val_macro_f1": val_eval["metrics"]["macro_f1"],
        "test_accuracy": test_eval["metrics"]["accuracy"],
        "test_macro_f1": test_eval["metrics"]["macro_f1"],
        "external_accuracy": ext["accuracy"],
        "external": {k: v for k, v in ext.items() if k != "accuracy"},
        "holdout": groups,
        "holdout_accuracy": holdout_accuracy(groups),
        "holdout_min_group_accuracy": min((g["accuracy"] for g in groups.values()), default=None),
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "stopped_early": fit.stopped_early,
        "train_images_per_second": round(fit.throughput, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "parity": parity,
        "dataset_id": dataset.version.id,
        "dataset_version": dataset.version.version,
        "dataset_leaky": dataset.manifest.get("leaky"),
        "dataset_grouping": dataset.manifest.get("grouping"),
        "image_size": image_size,
        "split_sizes": {s: len(v) for s, v in splits.items()},
        "per_class_test": test_eval["table"].to_dict(orient="records"),
        "val_confusion_matrix": val_cm.tolist(),
        "test_confusion_matrix": test_cm.tolist(),
        "history": fit.history,
    }
    metrics_path = run_dir / "metrics.json"
    _write_json(metrics_path, metrics)
    ext_txt = (
        "n/a" if ext["accuracy"] is None else f"{ext['accuracy']:.3f} ({ext['images']} images)"
    )
    print(
        f"summary: val macro-F1 {metrics['val_macro_f1']:.3f} | test accuracy "
        f"{metrics['test_accuracy']:.3f} macro-F1 {metrics['test_macro_f1']:.3f} "
        f"(in-distribution Kaggle frames: inflated) | external accuracy {ext_txt} | "
        f"{metrics['wall_seconds']}s"
    )
    for group, result in groups.items():
        print(
            f"held-out group {group}: accuracy {result['accuracy']:.3f} "
            f"macro-F1 {result['macro_f1']:.3f} ({result['images']} images)"
        )

    # -- upload + register ---------------------------------------------------------------------
    if ctx is not None:
        for key in (
            "test_accuracy",
            "test_macro_f1",
            "val_macro_f1",
            "external_accuracy",
            "holdout_accuracy",
        ):
            if metrics[key] is not None:
                ctx.logger.report_single_value(key, float(metrics[key]))
        for name, path in (
            ("model.onnx", onnx_path),
            ("classes.txt", classes_path),
            ("baseline.json", baseline_path),
            ("metrics.json", metrics_path),
        ):
            ctx.upload_artifact(name, str(path))
    model_id = None
    registered_onnx, registered_classes = str(onnx_path), str(classes_path)
    if p["register"]:
        from asl_recognition.registry import get_registry

        registry_metrics: dict[str, Any] = {
            k: metrics[k]
            for k in (
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
            )
        }
        # select_best logs both models' matrices; the status page shows production's
        for key in ("val_confusion_matrix", "test_confusion_matrix"):
            registry_metrics[key] = metrics[key]
        registry_metrics["holdout"] = {
            g: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "images": r["images"]}
            for g, r in groups.items()
        }
        record = get_registry().register(
            "asl",
            str(onnx_path),
            str(classes_path),
            registry_metrics,
            {k: v for k, v in p.items() if k != "register"},
            task=ctx.task if ctx is not None else None,
            dataset_id=dataset.version.id,
            baseline_path=str(baseline_path),
        )
        model_id = record.id
        registered_onnx, registered_classes = record.onnx_path, record.classes_path
        print(f"registered model asl v{record.version} ({record.id}, {record.backend})")
    return {
        "model_id": model_id,
        "onnx_path": registered_onnx,
        "classes_path": registered_classes,
        "run_dir": str(run_dir),
        "val_macro_f1": metrics["val_macro_f1"],
        "test_accuracy": metrics["test_accuracy"],
        "test_macro_f1": metrics["test_macro_f1"],
        "external_accuracy": metrics["external_accuracy"],
        "holdout_accuracy": metrics["holdout_accuracy"],
    }

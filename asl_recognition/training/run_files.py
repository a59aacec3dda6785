"""The files a training run hands on: the ONNX graph (kept only after the parity gate), the
class list, the drift baseline and ``metrics.json``, the run record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asl_recognition.classes import write_class_file
from asl_recognition.hands.landmarker import DETECTOR_METADATA_KEY
from asl_recognition.training.evaluate import holdout_accuracy
from asl_recognition.training.export import check_parity, export_onnx
from asl_recognition.training.loop import FitResult
from asl_recognition.training.metrics import confidence_histogram
from asl_recognition.training.run_inputs import Plan, RunData, untrained_classes
from asl_recognition.training.run_scores import Evaluation


@dataclass
class Exported:
    """The files a run hands on, and the parity figures of its ONNX graph."""

    onnx: Path
    classes: Path
    baseline: Path
    metrics: Path
    parity: dict[str, Any]


def export(plan: Plan, data: RunData, model: nn.Module, evaluation: Evaluation) -> Exported:
    """ONNX (kept only when it matches torch on every test image), class list and baseline."""
    run_dir = plan.run_dir
    onnx_tmp = run_dir / ".model.onnx.tmp"
    export_onnx(model, onnx_tmp, plan.image_size, len(plan.classes), onnx_metadata(plan))
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


def onnx_metadata(plan: Plan) -> dict[str, str]:
    """A landmark model's hand detector settings (from its table), for the served hand step."""
    detector = plan.meta.get("hand_detector")
    if not detector:
        return {}
    return {DETECTOR_METADATA_KEY: json.dumps(detector, sort_keys=True)}


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
        f"(in-distribution: training's signers, inflated) | external accuracy {shown} | "
        f"{metrics['wall_seconds']}s"
    )
    for group, result in metrics["holdout"].items():
        print(
            f"held-out group {group}: accuracy {result['accuracy']:.3f} "
            f"macro-F1 {result['macro_f1']:.3f} ({result['images']} images)"
        )

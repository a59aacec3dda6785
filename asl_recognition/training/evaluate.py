"""Evaluation: in-distribution test split and an external image folder from another source.

Kaggle test frames come from the same videos as training frames, so their accuracy is inflated;
the external folder (e.g. Massey hands on black) is the honest generalisation check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asl_recognition.imageio import ImageDecodeError
from asl_recognition.training.data import IMAGE_EXTENSIONS, TensorSplit, decode_resized
from asl_recognition.training.metrics import confusion_matrix, per_class_table, summarise


@dataclass
class Predictions:
    probabilities: torch.Tensor  # float32 [N,C]
    preds: torch.Tensor  # int64 [N]
    loss: float


def predict(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> Predictions:
    """Eval-mode forward over all images in batches (no augmentation)."""
    model.eval()
    probs, loss_sum = [], 0.0
    criterion = nn.CrossEntropyLoss(reduction="sum")
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device)
            logits = model(batch)
            if labels is not None:
                loss_sum += float(criterion(logits, labels[start : start + batch_size].to(device)))
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
    model.train()
    n_classes = getattr(model, "num_classes", None)
    probabilities = torch.cat(probs) if probs else torch.empty(0, n_classes or 0)
    return Predictions(probabilities, probabilities.argmax(1), loss_sum / max(1, len(images)))


def evaluate_split(
    model: nn.Module, split: TensorSplit, classes: Sequence[str], device: str = "cpu"
) -> dict:
    """Accuracy, macro-F1 and the per-class table of one split."""
    out = predict(model, split.images, split.labels, device=device)
    metrics = summarise(out.preds, split.labels, len(classes))
    table = per_class_table(out.preds, split.labels, classes)
    return {"metrics": metrics, "table": table, "predictions": out}


@dataclass
class ExternalSet:
    split: TensorSplit
    classes_used: list[str] = field(default_factory=list)
    skipped_folders: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def class_folder(
    folder: Path, classes: Sequence[str]
) -> tuple[list[tuple[Path, int]], list, list]:
    """``<CLASS>/*`` images with their class index; folder names match classes
    case-insensitively. Returns (files, classes used, skipped folder names)."""
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    files, used, skipped = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        index = lookup.get(sub.name.lower())
        if index is None:
            skipped.append(sub.name)
            continue
        found = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        used += [classes[index]] if found else []
        files += [(path, index) for path in found]
    return files, used, skipped


def load_external(folder: str | Path, classes: Sequence[str], image_size: int) -> ExternalSet:
    """The folder's images decoded at ``image_size``; unreadable ones are listed, not fatal."""
    folder = Path(folder)
    files, used, skipped = class_folder(folder, classes)
    images, labels, paths, unreadable = [], [], [], []
    for path, index in files:
        try:
            images.append(decode_resized(path, image_size))
        except ImageDecodeError:
            unreadable.append(str(path))
            continue
        labels.append(index)
        paths.append(path.relative_to(folder).as_posix())
    array = np.stack(images) if images else np.empty((0, image_size, image_size, 3), np.uint8)
    split = TensorSplit(
        torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(),
        torch.tensor(labels, dtype=torch.int64),
        paths,
    )
    return ExternalSet(split, used, skipped, unreadable)


def evaluate_external(
    model: nn.Module,
    folder: str | Path | None,
    classes: Sequence[str],
    image_size: int,
    device: str = "cpu",
    measure: Callable[[str | Path, Sequence[str]], ExternalSet] | None = None,
) -> dict:
    """External accuracy over the classes the folder has (None when there is no folder/image).

    ``measure`` turns the folder into model inputs (default: images decoded at ``image_size``;
    the landmark model passes the serving landmarker).
    """
    if not folder or not Path(folder).is_dir():
        return {"accuracy": None, "images": 0, "folder": str(folder) if folder else None}
    found = measure(folder, classes) if measure else load_external(folder, classes, image_size)
    result = {
        "folder": str(folder),
        "images": len(found.split),
        "classes": found.classes_used,
        "skipped_folders": found.skipped_folders,
        "unreadable": found.unreadable,
        "accuracy": None,
        "macro_f1_present_classes": None,
    }
    if len(found.split) == 0:
        return result
    out = predict(model, found.split.images, found.split.labels, device=device)
    result["accuracy"] = float(summarise(out.preds, found.split.labels, len(classes))["accuracy"])
    present = torch.tensor([classes.index(c) for c in found.classes_used])
    table = per_class_table(out.preds, found.split.labels, classes)
    result["macro_f1_present_classes"] = float(table["f1"].to_numpy()[present.numpy()].mean())
    result["per_class_recall"] = {
        classes[i]: float(table["recall"].iloc[int(i)]) for i in present.tolist()
    }
    return result


def holdout_labels(manifest: dict, split: TensorSplit) -> list[str]:
    """The manifest's ``holdout_label`` of every image of the decoded holdout split."""
    by_path = {e["path"]: e["holdout_label"] for e in manifest["splits"]["holdout"]}
    return [by_path[p] for p in split.paths]


def evaluate_groups(
    model: nn.Module,
    split: TensorSplit,
    groups: Sequence[str],
    classes: Sequence[str],
    device: str = "cpu",
) -> dict[str, dict]:
    """Accuracy, macro-F1 (over the classes the group has) and confusion matrix per held-out group.

    Each group (another signer or source) is scored on its own, so a model that only
    learnt one hand's look cannot hide behind a good average.
    """
    if len(split) == 0:
        return {}
    out = predict(model, split.images, split.labels, device=device)
    return score_groups(out.preds, split.labels, groups, classes)


def score_groups(
    preds: torch.Tensor, labels: torch.Tensor, groups: Sequence[str], classes: Sequence[str]
) -> dict[str, dict]:
    """Each held-out group's scores from top-1 answers (training's and the optimize task's)."""
    names = np.asarray(groups)
    result: dict[str, dict] = {}
    for group in sorted(set(groups)):
        mask = torch.from_numpy(names == group)
        preds_in, targets = preds[mask], labels[mask]
        present = sorted(set(targets.tolist()))
        table = per_class_table(preds_in, targets, classes)
        result[group] = {
            "images": int(mask.sum()),
            "accuracy": float(summarise(preds_in, targets, len(classes))["accuracy"]),
            "macro_f1": float(table["f1"].to_numpy()[present].mean()),
            "classes": [classes[i] for i in present],
            "confusion_matrix": confusion_matrix(preds_in, targets, len(classes)).tolist(),
        }
    return result


def holdout_accuracy(groups: dict[str, dict]) -> float | None:
    """Accuracy over every held-out image (groups weighted by size); None without a holdout."""
    images = sum(g["images"] for g in groups.values())
    if not images:
        return None
    return float(sum(g["accuracy"] * g["images"] for g in groups.values()) / images)

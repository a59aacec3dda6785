"""The published version's manifest and folder layout: ``<split>/<class>/<file>.jpg``, one
manifest entry per image, and the per-split / per-source counts and figures logged from it.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from asl_recognition.data import reporting
from asl_recognition.data.groups import HOLDOUT
from asl_recognition.data.split import SPLITS, Item
from asl_recognition.store.base import MANIFEST_FORMAT, MANIFEST_NAME

if TYPE_CHECKING:
    from asl_recognition.data.candidates import Candidate, PublishPlan

Uploader = Callable[[str, Any], None]


def new_manifest(plan: PublishPlan, labels: Sequence[str | None]) -> dict[str, Any]:
    split_names = list(SPLITS) + ([HOLDOUT] if plan.rules else [])
    return {
        "format": MANIFEST_FORMAT,
        "classes": plan.classes,
        "image_size": plan.options["image_size"],
        "grouping": plan.options["grouping"],
        "leaky": plan.leaky,
        "seed": plan.options["seed"],
        "raw_dataset_id": plan.raw_ids[0],
        "raw_dataset_ids": plan.raw_ids,
        "sources": plan.sources,
        "holdout": {
            "by": [r.describe() for r in plan.rules],
            "labels": sorted({lab for lab in labels if lab}),
        },
        "options": plan.options,
        "splits": {s: [] for s in split_names},
    }


def _target_name(split: str, cls: str, source: str, taken: set[str]) -> str:
    stem = PurePosixPath(source).stem
    name, n = f"{split}/{cls}/{stem}.jpg", 1
    while name in taken:  # A1.png and A1.jpg both become A1.jpg: keep both
        name, n = f"{split}/{cls}/{stem}_{n}.jpg", n + 1
    taken.add(name)
    return name


def lay_out(
    manifest: dict[str, Any],
    items: Sequence[Item],
    cands: Sequence[Candidate],
    labels: Sequence[str | None],
    assigned: tuple[list[str], list[str]],
    resized: Sequence[Path],
    stage: Path,
) -> dict[str, Path]:
    """Move each resized image to ``<split>/<class>/`` and list it in the manifest."""
    groups, splits = assigned
    split_names = list(manifest["splits"])
    files: dict[str, Path] = {}
    taken: set[str] = set()
    order = sorted(
        range(len(items)),
        key=lambda k: (split_names.index(splits[k]), items[k].cls, cands[k].rel, cands[k].raw.id),
    )
    for k in order:
        it, cand = items[k], cands[k]
        rel = _target_name(splits[k], it.cls, it.source, taken)
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(resized[k], stage / rel)
        files[rel] = stage / rel
        entry = {
            "path": rel,
            "source": it.source,
            "group": groups[k],
            "class": it.cls,
            "data_source": cand.data_source,
            "signer": cand.signer,
            "raw_dataset_id": cand.raw.id,
        }
        if labels[k]:
            entry["holdout_label"] = labels[k]
        manifest["splits"][splits[k]].append(entry)
    (stage / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    files[MANIFEST_NAME] = stage / MANIFEST_NAME
    return files


def classes_without_train(manifest: dict[str, Any], emptied: Sequence[str]) -> list[str]:
    """Classes with no train image; warns unless the holdout already said so."""
    classes = manifest["classes"]
    in_train = {e["class"] for e in manifest["splits"]["train"]}
    no_train = [c for c in classes if c not in in_train]
    if no_train and set(no_train) != set(emptied):
        warnings.warn(
            f"no train image for class(es) {', '.join(no_train)} after the split", stacklevel=3
        )
    return no_train


def per_split_counts(manifest: dict[str, Any]) -> dict[str, dict[str, int]]:
    classes = manifest["classes"]
    out = {}
    for split, entries in manifest["splits"].items():
        counts = {c: 0 for c in classes}
        for entry in entries:
            counts[entry["class"]] += 1
        out[split] = counts
    return out


def per_source_counts(manifest: dict[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split, entries in manifest["splits"].items():
        for e in entries:
            src = e.get("data_source", "")
            out.setdefault(src, {s: 0 for s in manifest["splits"]})[split] += 1
    return out


def log_manifest(
    logger: Any, upload: Uploader | None, manifest: dict, folder: Path, out: Path
) -> None:
    per_split = per_split_counts(manifest)
    out.mkdir(parents=True, exist_ok=True)  # a refused run made no folder
    preview = None
    train = manifest["splits"].get("train", [])
    if train:
        first: dict[str, list[dict]] = defaultdict(list)
        for entry in train:
            if len(first[entry["class"]]) < 2:
                first[entry["class"]].append(entry)
        cells = [(folder / e["path"], e["class"]) for c in manifest["classes"] for e in first[c]]
        preview = reporting.preview_grid(cells, out / "preview_train.png")
    reporting.class_histogram_png(per_split, out / "split_histogram.png", "ASL: images per split")
    reporting.log_splits(logger, per_split, preview, per_source_counts(manifest))
    if upload is not None:
        upload("manifest", folder / MANIFEST_NAME)
        upload("split_histogram", out / "split_histogram.png")

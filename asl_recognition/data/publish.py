"""Split ``ASL_raw`` without leakage, resize once, publish ``ASL`` (parent = the raw version)."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from asl_recognition.classes import CLASSES
from asl_recognition.data import reporting
from asl_recognition.data.preprocess import preprocess_all
from asl_recognition.data.raw import FINGERPRINT_TAG, fingerprint
from asl_recognition.data.scan import class_of, default_workers
from asl_recognition.data.split import SPLITS, Item, assign_groups, frame_number, split_groups
from asl_recognition.paths import workspace
from asl_recognition.store import DatasetStore, DatasetVersion, get_store
from asl_recognition.store.base import MANIFEST_NAME

PUBLISH_VERSION = 1
Uploader = Callable[[str, Any], None]


def _per_split_counts(manifest: dict[str, Any]) -> dict[str, dict[str, int]]:
    classes = manifest["classes"]
    out = {}
    for split, entries in manifest["splits"].items():
        counts = {c: 0 for c in classes}
        for entry in entries:
            counts[entry["class"]] += 1
        out[split] = counts
    return out


def _target_name(split: str, cls: str, source: str, taken: set[str]) -> str:
    stem = PurePosixPath(source).stem
    name, n = f"{split}/{cls}/{stem}.jpg", 1
    while name in taken:  # A1.png and A1.jpg both become A1.jpg: keep both
        name, n = f"{split}/{cls}/{stem}_{n}.jpg", n + 1
    taken.add(name)
    return name


def _log(logger: Any, upload: Uploader | None, manifest: dict, folder: Path, out: Path) -> None:
    per_split = _per_split_counts(manifest)
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
    reporting.log_splits(logger, per_split, preview)
    if upload is not None:
        upload("manifest", folder / MANIFEST_NAME)
        upload("split_histogram", out / "split_histogram.png")


def publish_dataset(
    raw_version: str | None = "latest",
    image_size: int = 64,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    grouping: str = "frame",
    seed: int = 0,
    block_frames: int = 150,
    edge_frames: int = 3,
    phash_threshold: int = 2,
    name: str = "ASL",
    raw_name: str = "ASL_raw",
    workers: int | None = None,
    store: DatasetStore | None = None,
    logger: Any = None,
    upload: Uploader | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Publish (or reuse) the processed dataset; returns dataset_id, dataset_version, reused."""
    store = store or get_store()
    raw = store.resolve(raw_name, raw_version)
    options = {
        "image_size": int(image_size),
        "split": [float(f) for f in split],
        "grouping": grouping,
        "seed": int(seed),
        "block_frames": int(block_frames),
        "edge_frames": int(edge_frames),
        "phash_threshold": int(phash_threshold),
    }
    fp = fingerprint({"raw": raw.id, "options": options, "version": PUBLISH_VERSION})
    tag = FINGERPRINT_TAG + fp
    report_dir = workspace() / "reports" / name
    report_dir.mkdir(parents=True, exist_ok=True)
    leaky = grouping == "none"
    if leaky:
        warnings.warn(
            "--grouping none: per-image random split; near-identical video frames cross "
            "train/val/test and inflate accuracy (manifest leaky=true)",
            stacklevel=2,
        )
    existing = store.find(name, [tag])
    if existing is not None:
        folder = store.local_copy(existing)
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        _log(logger, upload, manifest, folder, report_dir)
        return _outputs(existing, raw, manifest, reused=True)

    raw_dir = store.local_copy(raw)
    quarantined = {q["path"] for q in raw.metadata.get("quarantined", [])}
    data_root = raw.metadata.get("data_root", "")
    classes = list(raw.metadata.get("classes", CLASSES))
    sources = [
        (f.path, cls)
        for f in raw.files
        if f.path not in quarantined and (cls := class_of(f.path, data_root)) in classes
    ]
    if not sources:
        raise ValueError(f"{raw_name} {raw.id} has no valid images to publish")
    stage_parent = workspace() / "tmp"
    stage_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="asl_publish_", dir=stage_parent) as tmp:
        stage = Path(tmp)
        jobs = [
            (str(raw_dir / rel), str(stage / "_resized" / f"{i}.jpg"), int(image_size))
            for i, (rel, _) in enumerate(sources)
        ]
        hashes = preprocess_all(jobs, default_workers() if workers is None else workers, progress)
        items = [
            Item(source=rel, cls=cls, phash=h, frame=frame_number(rel, cls))
            for (rel, cls), h in zip(sources, hashes)
        ]
        groups = assign_groups(items, grouping, block_frames, edge_frames, phash_threshold)
        splits = split_groups(items, groups, split, seed)
        manifest: dict[str, Any] = {
            "classes": classes,
            "image_size": int(image_size),
            "grouping": grouping,
            "leaky": leaky,
            "seed": int(seed),
            "raw_dataset_id": raw.id,
            "options": options,
            "splits": {s: [] for s in SPLITS},
        }
        files: dict[str, Path] = {}
        taken: set[str] = set()
        order = sorted(range(len(items)), key=lambda k: (splits[k], items[k].cls, items[k].source))
        for k in order:
            it = items[k]
            rel = _target_name(splits[k], it.cls, it.source, taken)
            dest = stage / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(jobs[k][1], dest)
            files[rel] = dest
            manifest["splits"][splits[k]].append(
                {"path": rel, "source": it.source, "group": groups[k], "class": it.cls}
            )
        (stage / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
        files[MANIFEST_NAME] = stage / MANIFEST_NAME
        counts = {s: len(v) for s, v in manifest["splits"].items()}
        ds = store.create(
            name,
            files,
            parents=[raw.id],
            metadata={
                "fingerprint": fp,
                "options": options,
                "leaky": leaky,
                "raw_dataset_id": raw.id,
                "counts": counts,
                "groups": len(set(groups)),
            },
            tags=[tag, f"grouping:{grouping}"] + (["leaky"] if leaky else []),
            description=f"{image_size}px RGB, {grouping} grouping, seed {seed}, from {raw.id}",
        )
        _log(logger, upload, manifest, stage, report_dir)
    return _outputs(ds, raw, manifest, reused=False)


def _outputs(
    ds: DatasetVersion, raw: DatasetVersion, manifest: dict[str, Any], reused: bool
) -> dict[str, Any]:
    return {
        "dataset_id": ds.id,
        "dataset_version": ds.version,
        "reused": reused,
        "raw_dataset_id": raw.id,
        "leaky": manifest["leaky"],
        "counts": {s: len(v) for s, v in manifest["splits"].items()},
    }

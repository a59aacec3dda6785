"""Split ``ASL_raw`` without leakage, resize once, publish ``ASL`` (parents = the raw versions).

Several raw versions (and several sources inside one) can feed one ``ASL`` version; it lists
every raw version as a parent. Splits can keep signers or sources disjoint (``--group-by``) and
hold out whole sources/signers in a fourth ``holdout`` split that never reaches training.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from asl_recognition.classes import CLASSES
from asl_recognition.data import reporting
from asl_recognition.data.groups import (
    HOLDOUT,
    WHOLE_GROUP_BY,
    assign_holdout,
    parse_holdouts,
    split_whole_groups,
    whole_group_key,
)
from asl_recognition.data.preprocess import preprocess_all
from asl_recognition.data.raw import FINGERPRINT_TAG, fingerprint
from asl_recognition.data.scan import check_workers, class_of, default_workers
from asl_recognition.data.sources import (
    DEFAULT_SIGNER_PATTERN,
    SourceSpecError,
    signer_of,
    split_list,
)
from asl_recognition.data.split import (
    GROUPINGS,
    SPLITS,
    Item,
    assign_groups,
    check_split,
    frame_number,
    popcount64,
    split_groups,
)
from asl_recognition.imageio import check_image_size
from asl_recognition.paths import workspace
from asl_recognition.store import DatasetStore, DatasetVersion, get_store
from asl_recognition.store.base import MANIFEST_NAME, remove_stale

PUBLISH_VERSION = 2  # 2: data_source/signer per entry, holdout split, several raw parents
GROUP_BY = GROUPINGS + WHOLE_GROUP_BY
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
    reporting.log_splits(logger, per_split, preview, _per_source_counts(manifest))
    if upload is not None:
        upload("manifest", folder / MANIFEST_NAME)
        upload("split_histogram", out / "split_histogram.png")


@dataclass
class _Candidate:
    raw: DatasetVersion
    rel: str  # path inside the raw version
    cls: str
    data_source: str
    signer: str | None


def _raw_sources(raw: DatasetVersion, raw_name: str) -> list[dict[str, str]]:
    """The sources of a raw version; versions from before multi-source hold exactly one."""
    sources = raw.metadata.get("sources")
    if sources:
        return [{k: s[k] for k in ("name", "prefix", "data_root")} for s in sources]
    name = raw.metadata.get("source_name") or raw_name
    return [{"name": str(name), "prefix": "", "data_root": raw.metadata.get("data_root", "")}]


def _candidates(
    raws: Sequence[DatasetVersion], raw_name: str, classes: Sequence[str], signer_re: re.Pattern
) -> list[_Candidate]:
    out = []
    for raw in raws:
        quarantined = {q["path"] for q in raw.metadata.get("quarantined", [])}
        # longest prefix first: "" (a single source) must not swallow "massey/..."
        sources = sorted(_raw_sources(raw, raw_name), key=lambda s: -len(s["prefix"]))
        for f in raw.files:
            if f.path in quarantined:
                continue
            src = next((s for s in sources if f.path.startswith(s["prefix"])), None)
            if src is None or (cls := class_of(f.path, src["data_root"])) not in classes:
                continue
            signer = signer_of(f.path, signer_re)
            out.append(_Candidate(raw, f.path, cls, src["name"], signer))
    return out


def _resolve_raws(store: DatasetStore, raw_name: str, raw_version: Any) -> list[DatasetVersion]:
    refs = split_list(raw_version) or ["latest"]
    raws: dict[str, DatasetVersion] = {}
    for ref in refs:
        raw = store.resolve(raw_name, ref)
        raws.setdefault(raw.id, raw)
    return list(raws.values())


def _check_classes_left(
    cands: Sequence[_Candidate], labels: Sequence[str | None], classes: Sequence[str]
) -> list[str]:
    """Classes the holdout empties; refuses a holdout that leaves nothing to train on."""
    kept = Counter(c.cls for c, lab in zip(cands, labels) if lab is None)
    held = Counter(c.cls for c, lab in zip(cands, labels) if lab is not None)
    if not kept:
        raise SourceSpecError(
            f"the holdout takes all {len(cands)} images: nothing left for train/val/test"
        )
    emptied = [c for c in classes if held[c] and not kept[c]]
    if emptied:
        warnings.warn(
            f"the holdout leaves no train image for class(es) {', '.join(emptied)}",
            stacklevel=3,
        )
    return emptied


def _group_and_split(
    items: Sequence[Item],
    cands: Sequence[_Candidate],
    group_by: str,
    split: Sequence[float],
    seed: int,
    block_frames: int,
    edge_frames: int,
    phash_threshold: int,
) -> tuple[list[str], list[str]]:
    """(group, split) per item. signer/source: those groups go whole to one split; files
    naming no signer fall back to frame-block/phash groups split per class."""
    groups: list[str] = [""] * len(items)
    splits: list[str] = [""] * len(items)
    whole = [whole_group_key(group_by, c.data_source, c.signer) for c in cands]
    rest = [i for i, key in enumerate(whole) if key is None]
    if rest:
        fallback = "frame" if group_by in WHOLE_GROUP_BY else group_by
        sub = [items[i] for i in rest]
        sub_groups = assign_groups(sub, fallback, block_frames, edge_frames, phash_threshold)
        sub_splits = split_groups(sub, sub_groups, split, seed)
        for k, i in enumerate(rest):
            groups[i], splits[i] = sub_groups[k], sub_splits[k]
    keyed = [i for i, key in enumerate(whole) if key is not None]
    if keyed:
        placed = split_whole_groups([whole[i] for i in keyed], split, seed)
        for i in keyed:
            groups[i], splits[i] = whole[i], placed[whole[i]]
    return groups, splits


STAGE_PREFIX = "asl_publish_"


def staging_dir() -> tempfile.TemporaryDirectory:
    """A scratch folder under the workspace, named with this pid; leftovers of killed runs
    (their pid no longer runs) are removed first."""
    parent = workspace() / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale(parent.glob(STAGE_PREFIX + "*"), STAGE_PREFIX)
    return tempfile.TemporaryDirectory(prefix=f"{STAGE_PREFIX}{os.getpid()}_", dir=parent)


def _leaks_into_holdout(hashes: Sequence[str], in_holdout: Sequence[bool], threshold: int) -> int:
    """Near-duplicate pairs between the holdout and the rest (0 for a clean holdout)."""
    held = [h for h, x in zip(hashes, in_holdout) if x]
    rest = [h for h, x in zip(hashes, in_holdout) if not x]
    if not held or not rest:
        return 0
    words = np.array([int(h, 16) for h in rest], dtype=np.uint64)
    total = 0
    for start in range(0, len(held), 256):  # holdout x rest only, in blocks
        block = np.array([int(h, 16) for h in held[start : start + 256]], dtype=np.uint64)
        total += int((popcount64(block[:, None] ^ words[None, :]) <= threshold).sum())
    return total


def publish_dataset(
    raw_version: str | Sequence[str] | None = "latest",
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
    holdout_source: str | Sequence[str] | None = None,
    holdout_group: str | Sequence[str] | None = None,
    signer_pattern: str = DEFAULT_SIGNER_PATTERN,
) -> dict[str, Any]:
    """Publish (or reuse) the processed dataset; returns dataset_id, dataset_version, reused.

    ``raw_version``: one ref or several (list or ``a,b``); all become parents. ``grouping``
    (``--group-by``): frame | phash | none | signer | source. ``holdout_source`` /
    ``holdout_group`` (``SOURCE:SIGNER``, globs allowed): files that go to ``holdout/`` only.
    Raises SourceSpecError (a ValueError) for holdouts that cannot be honoured; nothing is
    published then.
    """
    check_split(split)
    image_size = check_image_size(image_size)
    check_workers(workers)
    if grouping not in GROUP_BY:
        raise SourceSpecError(f"--group-by must be one of {', '.join(GROUP_BY)}, not {grouping!r}")
    try:
        signer_re = re.compile(signer_pattern)
    except re.error as exc:
        raise SourceSpecError(f"--signer-pattern {signer_pattern!r}: {exc}") from exc
    store = store or get_store()
    raws = _resolve_raws(store, raw_name, raw_version)
    raw = raws[0]
    classes = list(raw.metadata.get("classes", CLASSES))
    for other in raws[1:]:
        if list(other.metadata.get("classes", CLASSES)) != classes:
            raise SourceSpecError(f"{raw_name} {other.id} has another class list than {raw.id}")
    known_sources = list(dict.fromkeys(s["name"] for r in raws for s in _raw_sources(r, raw_name)))
    rules = parse_holdouts(split_list(holdout_source), split_list(holdout_group), known_sources)
    options = {
        "image_size": int(image_size),
        "split": [float(f) for f in split],
        "grouping": grouping,
        "seed": int(seed),
        "block_frames": int(block_frames),
        "edge_frames": int(edge_frames),
        "phash_threshold": int(phash_threshold),
        "signer_pattern": signer_pattern,
        "holdout": [r.describe() for r in rules],
    }
    raw_ids = [r.id for r in raws]
    fp = fingerprint(
        {
            "raw": raw_ids[0] if len(raw_ids) == 1 else raw_ids,
            "options": options,
            "version": PUBLISH_VERSION,
        }
    )
    tag = FINGERPRINT_TAG + fp
    report_dir = workspace() / "reports" / name
    report_dir.mkdir(parents=True, exist_ok=True)
    leaky = grouping == "none"

    cands = _candidates(raws, raw_name, classes, signer_re)
    if not cands:
        raise ValueError(f"{raw_name} {', '.join(raw_ids)} has no valid images to publish")
    labels = assign_holdout(rules, [c.data_source for c in cands], [c.signer for c in cands])
    emptied = _check_classes_left(cands, labels, classes)
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
        return _outputs(existing, raws, manifest, reused=True)

    raw_dirs = {r.id: store.local_copy(r) for r in raws}
    multi = len(known_sources) > 1
    with staging_dir() as tmp:
        stage = Path(tmp)
        jobs = [
            (
                str(raw_dirs[c.raw.id] / c.rel),
                str(stage / "_resized" / f"{i}.jpg"),
                int(image_size),
            )
            for i, c in enumerate(cands)
        ]
        hashes = preprocess_all(jobs, default_workers() if workers is None else workers, progress)
        items = [
            Item(
                source=c.rel,
                cls=c.cls,
                phash=h,
                frame=frame_number(c.rel, c.cls),
                domain=c.data_source if multi else "",
            )
            for c, h in zip(cands, hashes)
        ]
        kept = [i for i, lab in enumerate(labels) if lab is None]
        groups: list[str] = [lab or "" for lab in labels]
        splits: list[str] = [HOLDOUT if lab else "" for lab in labels]
        kept_groups, kept_splits = _group_and_split(
            [items[i] for i in kept],
            [cands[i] for i in kept],
            grouping,
            split,
            seed,
            block_frames,
            edge_frames,
            phash_threshold,
        )
        for k, i in enumerate(kept):
            groups[i], splits[i] = kept_groups[k], kept_splits[k]
        in_holdout = [lab is not None for lab in labels]
        holdout_leaks = _leaks_into_holdout(hashes, in_holdout, phash_threshold)
        if holdout_leaks:
            warnings.warn(
                f"{holdout_leaks} phash near-duplicate pair(s) (distance <= {phash_threshold}) "
                "join the holdout and the other splits: check they are different pictures",
                stacklevel=2,
            )
        split_names = list(SPLITS) + ([HOLDOUT] if rules else [])
        manifest: dict[str, Any] = {
            "classes": classes,
            "image_size": int(image_size),
            "grouping": grouping,
            "leaky": leaky,
            "seed": int(seed),
            "raw_dataset_id": raw.id,
            "raw_dataset_ids": raw_ids,
            "sources": known_sources,
            "holdout": {
                "by": [r.describe() for r in rules],
                "groups": sorted({lab for lab in labels if lab}),
            },
            "options": options,
            "splits": {s: [] for s in split_names},
        }
        files: dict[str, Path] = {}
        taken: set[str] = set()
        order = sorted(
            range(len(items)),
            key=lambda k: (
                split_names.index(splits[k]),
                items[k].cls,
                cands[k].rel,
                cands[k].raw.id,
            ),
        )
        for k in order:
            it, cand = items[k], cands[k]
            rel = _target_name(splits[k], it.cls, it.source, taken)
            dest = stage / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(jobs[k][1], dest)
            files[rel] = dest
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
                entry["holdout_group"] = labels[k]
            manifest["splits"][splits[k]].append(entry)
        no_train = sorted(
            set(classes) - {e["class"] for e in manifest["splits"]["train"]},
            key=classes.index,
        )
        if no_train and set(no_train) != set(emptied):
            warnings.warn(
                f"no train image for class(es) {', '.join(no_train)} after the split",
                stacklevel=2,
            )
        (stage / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
        files[MANIFEST_NAME] = stage / MANIFEST_NAME
        counts = {s: len(v) for s, v in manifest["splits"].items()}
        ds = store.create(
            name,
            files,
            parents=raw_ids,
            metadata={
                "fingerprint": fp,
                "options": options,
                "leaky": leaky,
                "raw_dataset_id": raw.id,
                "raw_dataset_ids": raw_ids,
                "sources": known_sources,
                "counts": counts,
                "counts_per_source": _per_source_counts(manifest),
                "groups": len(set(groups)),
                "holdout_groups": manifest["holdout"]["groups"],
                "classes_without_train": no_train,
                "holdout_near_duplicates": holdout_leaks,
            },
            tags=[tag, f"grouping:{grouping}"]
            + (["leaky"] if leaky else [])
            + (["holdout"] if rules else []),
            description=(
                f"{image_size}px RGB, {grouping} grouping, seed {seed}, from {', '.join(raw_ids)}"
                + (f", holdout {', '.join(manifest['holdout']['groups'])}" if rules else "")
            ),
        )
        _log(logger, upload, manifest, stage, report_dir)
    return _outputs(ds, raws, manifest, reused=False)


def _per_source_counts(manifest: dict[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split, entries in manifest["splits"].items():
        for e in entries:
            src = e.get("data_source", "")
            out.setdefault(src, {s: 0 for s in manifest["splits"]})[split] += 1
    return out


def _outputs(
    ds: DatasetVersion, raws: Sequence[DatasetVersion], manifest: dict[str, Any], reused: bool
) -> dict[str, Any]:
    return {
        "dataset_id": ds.id,
        "dataset_version": ds.version,
        "reused": reused,
        "raw_dataset_id": raws[0].id,
        "raw_dataset_ids": [r.id for r in raws],
        "leaky": manifest["leaky"],
        "counts": {s: len(v) for s, v in manifest["splits"].items()},
        "holdout_groups": manifest.get("holdout", {}).get("groups", []),
    }

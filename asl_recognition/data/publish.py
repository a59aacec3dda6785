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

from asl_recognition.classes import CLASSES
from asl_recognition.data import reporting
from asl_recognition.data.groups import (
    HOLDOUT,
    WHOLE_GROUP_BY,
    HoldoutRule,
    assign_holdout,
    parse_holdouts,
    split_whole_groups,
    whole_group_key,
)
from asl_recognition.data.options import PublishDatasetOptions
from asl_recognition.data.per_file import check_workers, preprocess_one, run_pool
from asl_recognition.data.raw import FINGERPRINT_TAG, fingerprint
from asl_recognition.data.scan import class_of
from asl_recognition.data.sources import (
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
    near_pairs,
    split_groups,
)
from asl_recognition.imageio import check_image_size
from asl_recognition.options import settle
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
    phash: str | None = None  # from the raw version's scan; None for versions made before


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
        hashes = raw.metadata.get("phash") or {}
        # longest prefix first: "" (a single source) must not swallow "massey/..."
        sources = sorted(_raw_sources(raw, raw_name), key=lambda s: -len(s["prefix"]))
        for f in raw.files:
            if f.path in quarantined:
                continue
            src = next((s for s in sources if f.path.startswith(s["prefix"])), None)
            if src is None or (cls := class_of(f.path, src["data_root"])) not in classes:
                continue
            signer = signer_of(f.path, signer_re)
            out.append(_Candidate(raw, f.path, cls, src["name"], signer, hashes.get(f.path)))
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


def check_arguments(
    split: Sequence[float], image_size: int, grouping: str, signer_pattern: str, workers: Any
) -> re.Pattern:
    """Refuse bad options in one line before anything is read; returns the signer regex."""
    check_split(split)
    check_image_size(image_size)
    check_workers(workers)
    if grouping not in GROUP_BY:
        raise SourceSpecError(f"--group-by must be one of {', '.join(GROUP_BY)}, not {grouping!r}")
    try:
        return re.compile(signer_pattern)
    except re.error as exc:
        raise SourceSpecError(f"--signer-pattern {signer_pattern!r}: {exc}") from exc


def _common_classes(raws: Sequence[DatasetVersion], raw_name: str) -> list[str]:
    classes = list(raws[0].metadata.get("classes", CLASSES))
    for other in raws[1:]:
        if list(other.metadata.get("classes", CLASSES)) != classes:
            raise SourceSpecError(
                f"{raw_name} {other.id} has another class list than {raws[0].id}"
            )
    return classes


@dataclass
class _Plan:
    """What is published, from which raw versions, how: all decided before any image is read."""

    store: DatasetStore
    name: str
    raws: list[DatasetVersion]
    classes: list[str]
    sources: list[str]
    rules: list[HoldoutRule]
    options: dict[str, Any]

    @property
    def raw_ids(self) -> list[str]:
        return [r.id for r in self.raws]

    @property
    def leaky(self) -> bool:
        return self.options["grouping"] == "none"

    @property
    def fingerprint(self) -> str:
        ids = self.raw_ids
        raw = ids[0] if len(ids) == 1 else ids
        return fingerprint({"raw": raw, "options": self.options, "version": PUBLISH_VERSION})


def _resize(
    cands: Sequence[_Candidate],
    raw_dirs: dict[str, Path],
    stage: Path,
    image_size: int,
    workers: int | None,
    progress: bool,
) -> tuple[list[Path], list[str]]:
    """Every candidate resized once into ``stage/_resized``; returns (files, phashes)."""
    jobs = [
        (
            str(raw_dirs[c.raw.id] / c.rel),
            str(stage / "_resized" / f"{i}.jpg"),
            image_size,
            c.phash,
        )
        for i, c in enumerate(cands)
    ]
    hashes = run_pool(preprocess_one, jobs, workers, "preprocess", progress)
    return [Path(j[1]) for j in jobs], hashes


def _assign_splits(
    items: Sequence[Item],
    cands: Sequence[_Candidate],
    labels: Sequence[str | None],
    options: dict[str, Any],
) -> tuple[list[str], list[str]]:
    """(group, split) per item: holdout labels first, the rest split by ``options``."""
    groups: list[str] = [lab or "" for lab in labels]
    splits: list[str] = [HOLDOUT if lab else "" for lab in labels]
    kept = [i for i, lab in enumerate(labels) if lab is None]
    kept_groups, kept_splits = _group_and_split(
        [items[i] for i in kept],
        [cands[i] for i in kept],
        options["grouping"],
        options["split"],
        options["seed"],
        options["block_frames"],
        options["edge_frames"],
        options["phash_threshold"],
    )
    for k, i in enumerate(kept):
        groups[i], splits[i] = kept_groups[k], kept_splits[k]
    return groups, splits


def _holdout_leaks(hashes: Sequence[str], labels: Sequence[str | None], threshold: int) -> int:
    """Near-duplicate pairs between the holdout and the rest (0 for a clean holdout); warns."""
    held = [h for h, lab in zip(hashes, labels) if lab is not None]
    rest = [h for h, lab in zip(hashes, labels) if lab is None]
    leaks = len(near_pairs(held, threshold, others=rest))
    if leaks:
        warnings.warn(
            f"{leaks} phash near-duplicate pair(s) (distance <= {threshold}) join the holdout "
            "and the other splits: check they are different pictures",
            stacklevel=3,
        )
    return leaks


def _manifest(plan: _Plan, labels: Sequence[str | None]) -> dict[str, Any]:
    split_names = list(SPLITS) + ([HOLDOUT] if plan.rules else [])
    return {
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
            "groups": sorted({lab for lab in labels if lab}),
        },
        "options": plan.options,
        "splits": {s: [] for s in split_names},
    }


def _lay_out(
    manifest: dict[str, Any],
    items: Sequence[Item],
    cands: Sequence[_Candidate],
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
            entry["holdout_group"] = labels[k]
        manifest["splits"][splits[k]].append(entry)
    (stage / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    files[MANIFEST_NAME] = stage / MANIFEST_NAME
    return files


def _check_splits_filled(splits: Sequence[str], fractions: Sequence[float]) -> None:
    """Refuse a version no later step can use (training needs train and val); an empty test
    split is said in one warning (nothing to score on)."""
    counts = Counter(splits)
    kept = sum(counts[s] for s in SPLITS)
    cut = f"{kept} image(s) split {'/'.join(f'{f:g}' for f in fractions)}, whole groups per split"
    empty = [s for s in SPLITS if not counts[s]]
    if set(empty) & {"train", "val"}:
        raise SourceSpecError(
            f"the split leaves {' and '.join(empty)} empty ({cut}): training needs train and "
            "val; add images and publish again (nothing was published)"
        )
    if empty:
        warnings.warn(f"the split leaves test empty ({cut}): nothing to score on", stacklevel=3)


def _classes_without_train(manifest: dict[str, Any], emptied: Sequence[str]) -> list[str]:
    """Classes with no train image; warns unless the holdout already said so."""
    classes = manifest["classes"]
    in_train = {e["class"] for e in manifest["splits"]["train"]}
    no_train = [c for c in classes if c not in in_train]
    if no_train and set(no_train) != set(emptied):
        warnings.warn(
            f"no train image for class(es) {', '.join(no_train)} after the split", stacklevel=3
        )
    return no_train


def _create(
    plan: _Plan, manifest: dict[str, Any], files: dict[str, Path], facts: dict[str, Any]
) -> DatasetVersion:
    """The new ``ASL`` version, its raw versions as parents."""
    o = plan.options
    rules_text = ", ".join(manifest["holdout"]["groups"])
    return plan.store.create(
        plan.name,
        files,
        parents=plan.raw_ids,
        metadata={
            "fingerprint": plan.fingerprint,
            "options": o,
            "leaky": plan.leaky,
            "raw_dataset_id": plan.raw_ids[0],
            "raw_dataset_ids": plan.raw_ids,
            "sources": plan.sources,
            "counts": {s: len(v) for s, v in manifest["splits"].items()},
            "counts_per_source": _per_source_counts(manifest),
            "holdout_groups": manifest["holdout"]["groups"],
            **facts,
        },
        tags=[FINGERPRINT_TAG + plan.fingerprint, f"grouping:{o['grouping']}"]
        + (["leaky"] if plan.leaky else [])
        + (["holdout"] if plan.rules else []),
        description=(
            f"{o['image_size']}px RGB, {o['grouping']} grouping, seed {o['seed']}, from "
            f"{', '.join(plan.raw_ids)}" + (f", holdout {rules_text}" if plan.rules else "")
        ),
    )


def _options(opts: PublishDatasetOptions) -> dict[str, Any]:
    """The options as recorded (and fingerprinted): changing any makes a new version."""
    return {
        "image_size": int(opts.image_size),
        "split": [float(f) for f in opts.split],
        "grouping": opts.group_by,
        "seed": int(opts.seed),
        "block_frames": int(opts.block_frames),
        "edge_frames": int(opts.edge_frames),
        "phash_threshold": int(opts.phash_threshold),
        "signer_pattern": opts.signer_pattern,
    }


def _plan(
    store: DatasetStore,
    name: str,
    raw_name: str,
    raw_version: Any,
    holdouts: tuple[Any, Any],
    options: dict[str, Any],
) -> _Plan:
    """Resolve the raw versions and the holdout rules (unknown sources are refused here)."""
    raws = _resolve_raws(store, raw_name, raw_version)
    sources = list(dict.fromkeys(s["name"] for r in raws for s in _raw_sources(r, raw_name)))
    rules = parse_holdouts(split_list(holdouts[0]), split_list(holdouts[1]), sources)
    options = {**options, "holdout": [r.describe() for r in rules]}
    return _Plan(store, name, raws, _common_classes(raws, raw_name), sources, rules, options)


def _reuse(
    plan: _Plan, existing: DatasetVersion, logger: Any, upload: Uploader | None, out: Path
) -> dict[str, Any]:
    """Unchanged inputs and options: the existing version, logged again for this run."""
    folder = plan.store.local_copy(existing)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    _log(logger, upload, manifest, folder, out)
    return _outputs(existing, plan.raws, manifest, reused=True)


def _select(plan: _Plan, raw_name: str, signer_re: re.Pattern) -> tuple[list, list, list]:
    """(candidates, holdout labels, classes the holdout empties); refuses an empty selection."""
    cands = _candidates(plan.raws, raw_name, plan.classes, signer_re)
    if not cands:
        raise ValueError(f"{raw_name} {', '.join(plan.raw_ids)} has no valid images to publish")
    labels = assign_holdout(plan.rules, [c.data_source for c in cands], [c.signer for c in cands])
    return cands, labels, _check_classes_left(cands, labels, plan.classes)


def publish_dataset(
    settings: PublishDatasetOptions | None = None,
    store: DatasetStore | None = None,
    logger: Any = None,
    upload: Uploader | None = None,
    progress: bool = True,
    **changes: Any,
) -> dict[str, Any]:
    """Publish (or reuse) the processed dataset; returns dataset_id, dataset_version, reused.

    ``settings``: the publish_dataset task's options (their defaults when None), ``changes``
    replacing single fields by name. ``raw_version``: one ref or several (list or ``a,b``); all
    become parents. ``holdout_source`` / ``holdout_group`` (``SOURCE:SIGNER``, globs allowed):
    files that go to ``holdout/`` only. Raises ValueError (SourceSpecError for sources and
    holdouts) in one line for options that cannot be honoured, before any work; nothing is
    published then.
    """
    opts = settle(PublishDatasetOptions, settings, **changes)
    name, raw_name, workers = opts.name, opts.raw_name, opts.workers
    signer_re = check_arguments(
        opts.split, opts.image_size, opts.group_by, opts.signer_pattern, workers
    )
    options = _options(opts)
    holdouts = (opts.holdout_source, opts.holdout_group)
    plan = _plan(store or get_store(), name, raw_name, opts.raw_version, holdouts, options)
    report_dir = workspace() / "reports" / name
    report_dir.mkdir(parents=True, exist_ok=True)
    cands, labels, emptied = _select(plan, raw_name, signer_re)
    if plan.leaky:
        warnings.warn(
            "--grouping none: per-image random split; near-identical video frames cross "
            "train/val/test and inflate accuracy (manifest leaky=true)",
            stacklevel=2,
        )
    existing = plan.store.find(name, [FINGERPRINT_TAG + plan.fingerprint])
    if existing is not None:
        return _reuse(plan, existing, logger, upload, report_dir)
    raw_dirs = {r.id: plan.store.local_copy(r) for r in plan.raws}
    with staging_dir() as tmp:
        stage = Path(tmp)
        resized, hashes = _resize(
            cands, raw_dirs, stage, plan.options["image_size"], workers, progress
        )
        items = _items(cands, hashes, multi=len(plan.sources) > 1)
        assigned = _assign_splits(items, cands, labels, plan.options)
        _check_splits_filled(assigned[1], plan.options["split"])
        leaks = _holdout_leaks(hashes, labels, opts.phash_threshold)
        manifest = _manifest(plan, labels)
        files = _lay_out(manifest, items, cands, labels, assigned, resized, stage)
        facts = {
            "groups": len(set(assigned[0])),
            "classes_without_train": _classes_without_train(manifest, emptied),
            "holdout_near_duplicates": leaks,
        }
        ds = _create(plan, manifest, files, facts)
        _log(logger, upload, manifest, stage, report_dir)
    return _outputs(ds, plan.raws, manifest, reused=False)


def _items(cands: Sequence[_Candidate], hashes: Sequence[str], multi: bool) -> list[Item]:
    return [
        Item(
            source=c.rel,
            cls=c.cls,
            phash=h,
            frame=frame_number(c.rel, c.cls),
            domain=c.data_source if multi else "",
        )
        for c, h in zip(cands, hashes)
    ]


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

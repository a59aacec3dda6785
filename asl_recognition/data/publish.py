"""Split ``ASL_raw`` without leakage, resize once, publish ``ASL`` (parents = the raw versions).

Several raw versions (and several sources inside one) can feed one ``ASL`` version; it lists
every raw version as a parent. Splits can keep signers or sources disjoint (``--group-by``) and
hold out whole sources/signers in a fourth ``holdout`` split that never reaches training.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from asl_recognition.data.candidates import (
    Candidate,
    HoldoutPatterns,
    PublishPlan,
    assign_splits,
    check_splits_filled,
    holdout_leaks,
    plan_publish,
    select,
    split_items,
)
from asl_recognition.data.manifest import (
    Uploader,
    classes_without_train,
    lay_out,
    log_manifest,
    new_manifest,
    per_source_counts,
)
from asl_recognition.data.options import PublishDatasetOptions
from asl_recognition.data.per_file import POOL_MIN_FILES, preprocess_one
from asl_recognition.data.raw import FINGERPRINT_TAG
from asl_recognition.data.run_folders import run_report_dir, run_scratch
from asl_recognition.data.sources import SourceSpecError
from asl_recognition.data.split import check_split
from asl_recognition.image_size import check_image_size
from asl_recognition.options import settle
from asl_recognition.paths import workspace
from asl_recognition.store import DatasetStore, DatasetVersion, get_store
from asl_recognition.store.base import MANIFEST_NAME, remove_stale
from asl_recognition.workers import run_pool

STAGING = Path("tmp") / "publish"  # under the workspace
LEGACY_STAGE = "asl_publish_"  # tmp/asl_publish_<pid>_*: staging folders of older versions


@contextlib.contextmanager
def staging_dir() -> Iterator[str]:
    """This run's scratch folder under the workspace, removed at the end; one a killed run
    left is removed by the next (:func:`run_scratch`: flocked while its run lives). Judged by
    pid before, a run in another pid namespace (a second agent's container on a shared
    workspace) took a live run's folder for a dead one's and deleted it under it."""
    # an older version's leftovers (tmp/asl_publish_<pid>_*), judged by pid as it judged them
    remove_stale((workspace() / STAGING.parent).glob(LEGACY_STAGE + "*"), LEGACY_STAGE)
    with run_scratch(workspace() / STAGING) as folder:
        folder.mkdir()
        yield str(folder)


def check_arguments(split: Sequence[float], image_size: int, signer_pattern: str) -> re.Pattern:
    """Refuse what typing cannot (empty splits, a size no model takes, a bad regex) in one line,
    before anything is read; returns the signer regex."""
    check_split(split)
    check_image_size(image_size)
    try:
        return re.compile(signer_pattern)
    except re.error as exc:
        raise SourceSpecError(f"--signer-pattern {signer_pattern!r}: {exc}") from exc


def _resize(
    cands: Sequence[Candidate],
    raw_dirs: dict[str, Path],
    stage: Path,
    image_size: int,
    workers: int | None,
    progress: bool,
) -> list[Path]:
    """Every candidate resized once into ``stage/_resized``; returns the resized files."""
    jobs = [
        (str(raw_dirs[c.raw.id] / c.rel), str(stage / "_resized" / f"{i}.jpg"), image_size)
        for i, c in enumerate(cands)
    ]
    run_pool(preprocess_one, jobs, workers, "preprocess", progress, min_jobs=POOL_MIN_FILES)
    return [Path(j[1]) for j in jobs]


def _create(
    plan: PublishPlan, manifest: dict[str, Any], files: dict[str, Path], facts: dict[str, Any]
) -> DatasetVersion:
    """The new ``ASL`` version, its raw versions as parents."""
    o = plan.options
    rules_text = ", ".join(manifest["holdout"]["labels"])
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
            "counts_per_source": per_source_counts(manifest),
            "holdout_labels": manifest["holdout"]["labels"],
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


def _reuse(
    plan: PublishPlan, existing: DatasetVersion, logger: Any, upload: Uploader | None, out: Path
) -> dict[str, Any]:
    """Unchanged inputs and options: the existing version, logged again for this run."""
    folder = plan.store.local_copy(existing)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    log_manifest(logger, upload, manifest, folder, out)
    return _outputs(existing, plan.raws, manifest, reused=True)


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
        "holdout_labels": manifest["holdout"]["labels"],
    }


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
    files that go to ``holdout/`` only, each listed with its ``holdout_label``. Raises ValueError
    (SourceSpecError for sources and holdouts) in one line for options that cannot be honoured,
    before any work; nothing is published then.
    """
    opts = settle(PublishDatasetOptions, settings, **changes)
    name, raw_name, workers = opts.name, opts.raw_name, opts.workers
    signer_re = check_arguments(opts.split, opts.image_size, opts.signer_pattern)
    options = _options(opts)
    holdouts = HoldoutPatterns.from_options(opts)
    plan = plan_publish(store or get_store(), name, raw_name, opts.raw_version, holdouts, options)
    cands, labels, emptied = select(plan, raw_name, signer_re)
    # its own (overlapping runs never log each other's plots), made when the plots are drawn
    report_dir = run_report_dir(name)
    if plan.leaky:
        warnings.warn(
            "--group-by none: per-image random split; near-identical video frames cross "
            "train/val/test and inflate accuracy (manifest leaky=true)",
            stacklevel=2,
        )
    existing = plan.store.reusable(name, [FINGERPRINT_TAG + plan.fingerprint])
    if existing is not None:
        return _reuse(plan, existing, logger, upload, report_dir)
    raw_dirs = {r.id: plan.store.local_copy(r) for r in plan.raws}
    with staging_dir() as tmp:
        stage = Path(tmp)
        resized = _resize(cands, raw_dirs, stage, plan.options["image_size"], workers, progress)
        items = split_items(cands, multi=len(plan.sources) > 1)
        assigned = assign_splits(items, cands, labels, plan.options)
        check_splits_filled(assigned[1], plan.options["split"])
        leaks = holdout_leaks([c.phash for c in cands], labels, opts.phash_threshold)
        manifest = new_manifest(plan, labels)
        files = lay_out(manifest, items, cands, labels, assigned, resized, stage)
        facts = {
            "groups": len(set(assigned[0])),
            "classes_without_train": classes_without_train(manifest, emptied),
            "holdout_near_duplicates": leaks,
        }
        ds = _create(plan, manifest, files, facts)
        log_manifest(logger, upload, manifest, stage, report_dir)
    return _outputs(ds, plan.raws, manifest, reused=ds.reused)

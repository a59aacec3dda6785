"""Which raw files a publish takes, and where each goes: the plan (raw versions, sources, holdout
rules, options), its candidate files, their holdout labels, then the group and split of every
file that is not held out.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asl_recognition.classes import CLASSES
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
from asl_recognition.data.raw import fingerprint
from asl_recognition.data.scan import class_of
from asl_recognition.data.sources import (
    SourceSpecError,
    signer_of,
    split_list,
)
from asl_recognition.data.split import (
    SPLITS,
    Item,
    assign_groups,
    frame_number,
    near_pairs,
    split_groups,
)
from asl_recognition.store import DatasetStore, DatasetVersion
from asl_recognition.store.base import MANIFEST_FORMAT

# 2: data_source/signer per entry, holdout split, several raw parents; 3: holdout_label


@dataclass
class PublishPlan:
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
        return fingerprint({"raw": raw, "options": self.options, "version": MANIFEST_FORMAT})


@dataclass(frozen=True)
class HoldoutPatterns:
    """The holdout options as given: whole sources (``holdout_source``) and ``SOURCE:SIGNER``
    patterns, globs allowed (``holdout_group``). Each held-out file gets the resolved label of
    the rule that took it (``massey/hand4``): its ``holdout_label`` in the manifest."""

    sources: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, opts: PublishDatasetOptions) -> HoldoutPatterns:
        return cls(tuple(opts.holdout_source), tuple(opts.holdout_group))


def plan_publish(
    store: DatasetStore,
    name: str,
    raw_name: str,
    raw_version: Any,
    holdouts: HoldoutPatterns,
    options: dict[str, Any],
) -> PublishPlan:
    """Resolve the raw versions and the holdout rules (unknown sources are refused here)."""
    raws = _raw_versions(store, raw_name, raw_version)
    sources = list(dict.fromkeys(s["name"] for r in raws for s in raw_sources(r, raw_name)))
    rules = parse_holdouts(holdouts.sources, holdouts.groups, sources)
    options = {**options, "holdout": [r.describe() for r in rules]}
    return PublishPlan(store, name, raws, _common_classes(raws, raw_name), sources, rules, options)


def _raw_versions(store: DatasetStore, raw_name: str, raw_version: Any) -> list[DatasetVersion]:
    refs = split_list(raw_version) or ["latest"]
    raws: dict[str, DatasetVersion] = {}
    for ref in refs:
        raw = store.version_for(raw_name, ref)
        raws.setdefault(raw.id, raw)
    return list(raws.values())


def _common_classes(raws: Sequence[DatasetVersion], raw_name: str) -> list[str]:
    classes = list(raws[0].metadata.get("classes", CLASSES))
    for other in raws[1:]:
        if list(other.metadata.get("classes", CLASSES)) != classes:
            raise SourceSpecError(
                f"{raw_name} {other.id} has another class list than {raws[0].id}"
            )
    return classes


@dataclass
class Candidate:
    """A raw file a publish takes: where it is, its class, source, signer and scan phash."""

    raw: DatasetVersion
    rel: str  # path inside the raw version
    cls: str
    data_source: str
    signer: str | None
    phash: str  # from the raw version's scan


def _scan_phashes(raw: DatasetVersion, raw_name: str) -> dict[str, str]:
    """The phash of every valid file, as validate_raw's scan recorded it."""
    hashes = raw.metadata.get("phash")
    if hashes is None:
        raise SourceSpecError(
            f"{raw_name} {raw.id} records no scan phash; validate its source again"
        )
    return hashes


def raw_sources(raw: DatasetVersion, raw_name: str) -> list[dict[str, str]]:
    """The sources a raw version records (validate_raw writes them, one or several)."""
    sources = raw.metadata.get("sources")
    if not sources:
        raise SourceSpecError(
            f"{raw_name} version {raw.id} records no sources: it was not made by "
            "tasks/validate_raw.py; validate the images again"
        )
    return [{k: s[k] for k in ("name", "prefix", "data_root")} for s in sources]


def find_candidates(
    raws: Sequence[DatasetVersion], raw_name: str, classes: Sequence[str], signer_re: re.Pattern
) -> list[Candidate]:
    out = []
    for raw in raws:
        quarantined = {q["path"] for q in raw.metadata.get("quarantined", [])}
        hashes = _scan_phashes(raw, raw_name)
        # longest prefix first: "" (a single source) must not swallow "massey/..."
        sources = sorted(raw_sources(raw, raw_name), key=lambda s: -len(s["prefix"]))
        for f in raw.files:
            if f.path in quarantined:
                continue
            src = next((s for s in sources if f.path.startswith(s["prefix"])), None)
            if src is None or (cls := class_of(f.path, src["data_root"])) not in classes:
                continue
            signer = signer_of(f.path, signer_re)
            out.append(Candidate(raw, f.path, cls, src["name"], signer, hashes[f.path]))
    return out


def select(plan: PublishPlan, raw_name: str, signer_re: re.Pattern) -> tuple[list, list, list]:
    """(candidates, holdout labels, classes the holdout empties); refuses an empty selection."""
    cands = find_candidates(plan.raws, raw_name, plan.classes, signer_re)
    if not cands:
        raise ValueError(f"{raw_name} {', '.join(plan.raw_ids)} has no valid images to publish")
    labels = assign_holdout(plan.rules, [c.data_source for c in cands], [c.signer for c in cands])
    return cands, labels, check_classes_left(cands, labels, plan.classes)


def check_classes_left(
    cands: Sequence[Candidate], labels: Sequence[str | None], classes: Sequence[str]
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


def split_items(cands: Sequence[Candidate], multi: bool) -> list[Item]:
    """What the grouping reads of each candidate (its source is a domain when several)."""
    return [
        Item(
            source=c.rel,
            cls=c.cls,
            phash=c.phash,
            frame=frame_number(c.rel, c.cls),
            domain=c.data_source if multi else "",
        )
        for c in cands
    ]


def assign_splits(
    items: Sequence[Item],
    cands: Sequence[Candidate],
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


def _group_and_split(
    items: Sequence[Item],
    cands: Sequence[Candidate],
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


def check_splits_filled(splits: Sequence[str], fractions: Sequence[float]) -> None:
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


def holdout_leaks(hashes: Sequence[str], labels: Sequence[str | None], threshold: int) -> int:
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

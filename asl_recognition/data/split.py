"""Leakage-safe splitting: whole groups of near-identical images go to one split.

Kaggle ASL frames are consecutive video frames (``A1008.jpg`` = frame 1008). A per-image random
split puts near-identical neighbours in train and test and reports ~99% accuracy that does not
transfer. Images are grouped into frame-number blocks (or perceptual-hash clusters when names
carry no frame number); groups are then merged so that

* exact and near duplicates (phash Hamming distance <= ``threshold``) share a group, across
  blocks and across classes;
* consecutive frames on either side of a block edge (frame gap <= ``edge_frames``) share a group;

and whole groups are assigned to train/val/test per class, reproducibly from the seed.
"""

from __future__ import annotations

import math
import random
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

SPLITS = ("train", "val", "test")
GROUPINGS = ("frame", "phash", "none")
_FRAME = re.compile(r"^(?P<prefix>.*?)(?P<frame>\d+)$")


@dataclass
class Item:
    source: str  # raw relative path
    cls: str
    phash: str  # 16 hex digits (imagehash.phash)
    frame: int | None = None
    # the source name when several are merged: frame 12 of A in two sources is not one block
    domain: str = ""

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.cls}" if self.domain else self.cls


def check_split(fractions: Sequence[float]) -> list[float]:
    """The train/val/test fractions normalised to sum 1, or a one-line ValueError.

    Checked before any work: an empty val or test split would publish a dataset on which early
    stopping, selection or the final score measure nothing.
    """
    shown = " ".join(str(f) for f in fractions) if isinstance(fractions, Sequence) else fractions
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence):
        raise ValueError(f"--split needs three numbers TRAIN VAL TEST, got {fractions!r}")
    if len(fractions) != len(SPLITS):
        raise ValueError(f"--split needs three numbers TRAIN VAL TEST, got {shown!r}")
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ValueError(f"--split {shown}: not numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"--split {shown}: every fraction must be a finite number")
    if any(v < 0 for v in values):
        raise ValueError(f"--split {shown}: fractions cannot be negative")
    if not any(values):
        raise ValueError(f"--split {shown}: all fractions are 0")
    # Scaled by the largest first: three values near 1e308 would sum to inf (and give 0s).
    largest = max(values)
    scaled = [v / largest for v in values]
    shares = [v / sum(scaled) for v in scaled]
    empty = [name for name, v in zip(SPLITS, shares) if not v > 0]
    if empty:
        raise ValueError(
            f"--split {shown}: the {', '.join(empty)} split(s) would be empty; "
            "every split needs a fraction above 0"
        )
    return shares


def frame_number(path: str, cls: str) -> int | None:
    """``A1008.jpg`` in class A -> 1008; None when the name is not ``<CLASS><digits>``."""
    m = _FRAME.match(PurePosixPath(path).stem)
    if not m or m.group("prefix").lower().rstrip("_- ") != cls.lower():
        return None
    return int(m.group("frame"))


def _hash_words(hashes: Sequence[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Bits set per uint64 (SWAR; numpy 1.26 has no bitwise_count)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


def near_pairs(
    hashes: Sequence[str],
    threshold: int,
    chunk: int = 256,
    others: Sequence[str] | None = None,
) -> list[tuple[int, int]]:
    """Index pairs whose phash Hamming distance is <= threshold (vectorised, in blocks).

    Within ``hashes`` (pairs i < j), or across: i into ``hashes``, j into ``others``.
    """
    if threshold < 0 or not len(hashes) or (others is not None and not len(others)):
        return []
    data = _hash_words(hashes)
    against = data if others is None else _hash_words(others)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(data), chunk):
        block = data[start : start + chunk]
        ii, jj = np.nonzero(popcount64(block[:, None] ^ against[None, :]) <= threshold)
        ii = ii + start
        keep = ii < jj if others is None else slice(None)
        pairs.extend(zip(ii[keep].tolist(), jj[keep].tolist()))
    return pairs


def hamming(a: str, b: str) -> int:
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def assign_groups(
    items: Sequence[Item],
    grouping: str = "frame",
    block_frames: int = 150,
    edge_frames: int = 3,
    threshold: int = 2,
) -> list[str]:
    """A group id per item, e.g. ``A:blk3``, ``A:blk3+blk4`` (merged), ``A:ph7``, ``A:img:A12``."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, not {grouping!r}")
    if grouping == "none":
        return [f"{it.key}:img:{PurePosixPath(it.source).stem}" for it in items]
    base: list[str] = []
    for i, it in enumerate(items):
        if grouping == "frame" and it.frame is not None:
            base.append(f"{it.key}:blk{it.frame // block_frames}")
        else:
            base.append(f"{it.key}:ph#{i}")  # a singleton until phash merges it
    uf = _UnionFind(len(items))
    first_index: dict[str, int] = {}
    for i, key in enumerate(base):
        uf.union(first_index.setdefault(key, i), i)
    for i, j in near_pairs([it.phash for it in items], threshold):
        uf.union(i, j)
    if grouping == "frame":
        by_class: dict[str, list[int]] = defaultdict(list)
        for i, it in enumerate(items):
            if it.frame is not None:
                by_class[it.key].append(i)
        for members in by_class.values():
            members.sort(key=lambda k: items[k].frame)
            for a, b in zip(members, members[1:]):
                if items[b].frame - items[a].frame <= edge_frames:
                    uf.union(a, b)  # consecutive frames across a block edge stay together
    return _name_groups(items, base, uf)


def _name_groups(items: Sequence[Item], base: list[str], uf: _UnionFind) -> list[str]:
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(items)):
        members[uf.find(i)].append(i)
    names: dict[int, str] = {}
    ph_counter: Counter[str] = Counter()
    for root in sorted(members, key=lambda r: sorted(items[k].source for k in members[r])[0]):
        idx = members[root]
        blocks = sorted({base[k] for k in idx if ":blk" in base[k]}, key=_block_key)
        if blocks:
            cls = blocks[0].split(":", 1)[0]
            rest = [b.split(":", 1)[1] if b.startswith(cls + ":") else b for b in blocks[1:]]
            names[root] = "+".join([blocks[0]] + rest)
        else:
            cls = Counter(items[k].key for k in idx).most_common(1)[0][0]
            names[root] = f"{cls}:ph{ph_counter[cls]}"
            ph_counter[cls] += 1
    return [names[uf.find(i)] for i in range(len(items))]


def _block_key(block: str) -> tuple[str, int]:
    cls, blk = block.split(":", 1)
    return cls, int(blk[3:])


def place_groups(
    sizes: Mapping[str, int], fractions: Sequence[float], seed_key: str
) -> dict[str, list[str]]:
    """Greedy placement of whole groups: split name -> the groups it gets.

    Groups are visited largest first (seeded shuffle among equals) and each goes to the split
    whose fill ratio (images / target) stays lowest, so ratios come close to ``fractions``; a
    split left empty then takes the smallest group of the split holding the most groups.
    """
    fractions = check_split(fractions)
    order = sorted(sizes)
    random.Random(seed_key).shuffle(order)
    order.sort(key=lambda g: -sizes[g])
    n = sum(sizes.values())
    targets = {s: f * n for s, f in zip(SPLITS, fractions)}
    assigned: dict[str, list[str]] = {s: [] for s in SPLITS}
    filled = {s: 0 for s in SPLITS}
    for g in order:
        best = min(SPLITS, key=lambda s: ((filled[s] + sizes[g]) / targets[s], SPLITS.index(s)))
        assigned[best].append(g)
        filled[best] += sizes[g]
    for s in SPLITS:  # never leave a split empty when the groups allow it
        donor = max(SPLITS, key=lambda d: len(assigned[d]))
        if not assigned[s] and len(assigned[donor]) > 1:
            g = min(assigned[donor], key=lambda k: sizes[k])
            assigned[donor].remove(g)
            assigned[s].append(g)
    return assigned


def split_groups(
    items: Sequence[Item],
    groups: Sequence[str],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> list[str]:
    """Assign whole groups to splits, stratified per class (a group counts for its majority class).

    Each class's groups are placed by :func:`place_groups`, seeded per class.
    """
    check_split(fractions)
    group_members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        group_members[g].append(i)
    by_class: dict[str, dict[str, int]] = defaultdict(dict)
    for g, idx in group_members.items():
        cls = Counter(items[k].cls for k in idx).most_common(1)[0][0]
        by_class[cls][g] = len(idx)
    split_of_group: dict[str, str] = {}
    for cls in sorted(by_class):
        if len(by_class[cls]) < len(SPLITS):
            warnings.warn(
                f"class {cls}: {len(by_class[cls])} group(s) for {len(SPLITS)} splits; "
                "some splits get none of it (smaller --block-frames or more data helps)",
                stacklevel=2,
            )
        for s, gs in place_groups(by_class[cls], fractions, f"{seed}:{cls}").items():
            split_of_group.update((g, s) for g in gs)
    return [split_of_group[g] for g in groups]

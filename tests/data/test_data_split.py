"""Leakage-safe grouping and splitting, on real Kaggle frames."""

from __future__ import annotations

import random
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

from asl_recognition.data.per_file import scan_file
from asl_recognition.data.rules import apply_rules
from asl_recognition.data.scan import scan_source
from asl_recognition.data.split import (
    Item,
    assign_groups,
    frame_number,
    hamming,
    near_pairs,
    split_groups,
)
from asl_recognition.imageio import MAX_PIXELS

THRESHOLD = 2
EDGE = 3


def _items(folder: Path) -> list[Item]:
    table = apply_rules(scan_source(folder, progress=False).table)
    valid = table[table["status"] == "valid"]
    return [
        Item(source=p, cls=c, phash=h, frame=frame_number(p, c))
        for p, c, h in zip(valid["path"], valid["class"], valid["phash"])
    ]


@pytest.fixture(scope="module")
def real_items(request: pytest.FixtureRequest) -> list[Item]:
    """The 200-per-class shared sample when present (stronger check), else the bundled slice."""
    from asl_recognition.paths import SAMPLE_DATA, SHARED_DATA

    shared = SHARED_DATA / "asl_kaggle_sample"
    return _items(shared if shared.is_dir() else SAMPLE_DATA)


@pytest.fixture(scope="module")
def frame_groups(real_items: list[Item]) -> list[str]:
    return assign_groups(real_items, "frame", 150, EDGE, THRESHOLD)


@pytest.fixture(scope="module")
def real_pairs(real_items: list[Item]) -> list[tuple[int, int]]:
    return near_pairs([it.phash for it in real_items], THRESHOLD)


def assert_no_leakage(groups: list[str], splits: list[str], pairs: list[tuple[int, int]]) -> None:
    """No group and no near-duplicate pair spans two splits (which frames belong together is
    checked against a hand-made answer in ``test_a_real_table_groups_as_worked_out_by_hand``)."""
    split_of_group: dict[str, set[str]] = defaultdict(set)
    for g, s in zip(groups, splits):
        split_of_group[g].add(s)
    spanning = {g: s for g, s in split_of_group.items() if len(s) > 1}
    assert not spanning, f"groups across splits: {list(spanning)[:5]}"
    assert pairs, "the real sample holds near duplicates"
    for i, j in pairs:
        assert splits[i] == splits[j], (i, j)


# Real Kaggle frames (asl_kaggle_sample; A8 and A1136 are also in data/sample) and their phashes,
# each row: path, frame, phash. With 150-frame blocks, a 3-frame edge and threshold 2:
# - A1023 (block 6) and A1133 (block 7) are near duplicates (distance 2); A1136 is in block 7;
# - A2007 (block 13) and D2128 (block 14) are near duplicates across two classes (distance 2);
# - F149 (block 0) and F150 (block 1) are near duplicates and neighbours; F160 and F299 are in
#   block 1; F303 (block 2) is 4 frames from F299, one more than the edge: not merged;
# - L149/L151 (distance 6) and Q148/Q151 (distance 6) are merged only as edge neighbours,
#   Q's gap of 3 frames being exactly the edge.
HAND_TABLE = [
    ("A/A8.jpg", 8, "b34c4f9b323127a6"),
    ("A/A1023.jpg", 1023, "ec19254a9a9b1ecb"),
    ("A/A1133.jpg", 1133, "ec19254a9a9b9ccb"),
    ("A/A1136.jpg", 1136, "ec19346b1a9b96cc"),
    ("A/A2007.jpg", 2007, "a34c379b2a4e5593"),
    ("D/D2128.jpg", 2128, "a34c379b2a4e5693"),
    ("F/F149.jpg", 149, "b51fc26c0b2324bf"),
    ("F/F150.jpg", 150, "b50fc27c0b2324bf"),
    ("F/F160.jpg", 160, "b11ac6681b0b2dbf"),
    ("F/F299.jpg", 299, "80367b2c2f9b2cb3"),
    ("F/F303.jpg", 303, "843b792e2799269b"),
    ("L/L149.jpg", 149, "b0c6c97973d14d58"),
    ("L/L151.jpg", 151, "b0ccd97973134d58"),
    ("Q/Q148.jpg", 148, "e0d25c79269c5b66"),
    ("Q/Q151.jpg", 151, "e0db5c7923945966"),
]
HAND_FRAME_GROUPS = [
    "A:blk0",
    "A:blk6+blk7",
    "A:blk6+blk7",
    "A:blk6+blk7",
    "A:blk13+D:blk14",
    "A:blk13+D:blk14",
    "F:blk0+blk1",
    "F:blk0+blk1",
    "F:blk0+blk1",
    "F:blk0+blk1",
    "F:blk2",
    "L:blk0+blk1",
    "L:blk0+blk1",
    "Q:blk0+blk1",
    "Q:blk0+blk1",
]
# phash grouping ignores frames: only the three near-duplicate pairs merge. Clusters are named
# per class in the order of their first path (A/A1023 < A/A1136 < A/A2007 < A/A8).
HAND_PHASH_GROUPS = [
    "A:ph3",
    "A:ph0",
    "A:ph0",
    "A:ph1",
    "A:ph2",
    "A:ph2",
    "F:ph0",
    "F:ph0",
    "F:ph1",
    "F:ph2",
    "F:ph3",
    "L:ph0",
    "L:ph1",
    "Q:ph0",
    "Q:ph1",
]


def _hand_items() -> list[Item]:
    return [Item(path, path.split("/")[0], phash, frame) for path, frame, phash in HAND_TABLE]


def test_a_real_table_groups_as_worked_out_by_hand() -> None:
    items = _hand_items()
    assert [frame_number(it.source, it.cls) for it in items] == [it.frame for it in items]
    assert assign_groups(items, "frame", 150, EDGE, THRESHOLD) == HAND_FRAME_GROUPS
    assert assign_groups(items, "phash", threshold=THRESHOLD) == HAND_PHASH_GROUPS


def test_the_hand_table_holds_the_real_hashes() -> None:
    """Each row's phash is the scan's own, for every row whose photo is on this machine."""
    from asl_recognition.paths import SAMPLE_DATA, SHARED_DATA

    checked = 0
    for path, _, phash in HAND_TABLE:
        for root in (SAMPLE_DATA, SHARED_DATA / "asl_kaggle_sample"):
            if (root / path).is_file():
                row = scan_file((str(root), path, path.split("/")[0], False, MAX_PIXELS))
                assert row["phash"] == phash, path
                checked += 1
                break
    assert checked >= 2  # A8 and A1136 are bundled


def test_frame_numbers_from_kaggle_names() -> None:
    assert frame_number("A/A1008.jpg", "A") == 1008
    assert frame_number("del/del12.jpg", "del") == 12
    assert frame_number("nothing/nothing_7.jpg", "nothing") == 7
    assert frame_number("A/hand1_a_bot_seg_1.jpeg", "A") is None
    assert frame_number("A/B12.jpg", "A") is None  # another class's name is not a frame of A


def test_near_pairs_matches_brute_force(real_items: list[Item]) -> None:
    sample = random.Random(0).sample(real_items, min(400, len(real_items)))
    hashes = [it.phash for it in sample]
    brute = {
        (i, j)
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if hamming(hashes[i], hashes[j]) <= 6
    }
    assert brute, "the sample should hold near duplicates at distance 6"
    assert set(near_pairs(hashes, 6, chunk=37)) == brute


def test_default_frame_grouping_does_not_leak(
    real_items: list[Item], frame_groups: list[str], real_pairs
) -> None:
    groups = frame_groups
    assert all(":blk" in g for g in groups)
    splits = split_groups(real_items, groups, (0.7, 0.15, 0.15), seed=0)
    assert_no_leakage(groups, splits, real_pairs)
    n = len(real_items)
    for name, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs(splits.count(name) / n - frac) < 0.06, name
    classes = {it.cls for it in real_items}
    for name in ("train", "val", "test"):  # stratified: every class in every split
        assert {it.cls for it, s in zip(real_items, splits) if s == name} == classes


def test_phash_grouping_does_not_leak(real_items: list[Item], real_pairs) -> None:
    groups = assign_groups(real_items, "phash", threshold=THRESHOLD)
    assert all(":ph" in g for g in groups)
    splits = split_groups(real_items, groups, (0.7, 0.15, 0.15), seed=1)
    split_of_group = defaultdict(set)
    for g, s in zip(groups, splits):
        split_of_group[g].add(s)
    assert all(len(s) == 1 for s in split_of_group.values())
    for i, j in real_pairs:
        assert splits[i] == splits[j]


def test_random_split_leaks_which_is_why_it_is_flagged(real_items: list[Item], real_pairs) -> None:
    groups = assign_groups(real_items, "none")
    splits = split_groups(real_items, groups, (0.7, 0.15, 0.15), seed=0)
    crossing = [(i, j) for i, j in real_pairs if splits[i] != splits[j]]
    assert crossing, "a per-image split of video frames puts near duplicates in two splits"


def test_block_edges_are_merged() -> None:
    far = ["0000000000000000", "ffffffffffffffff", "00000000ffffffff", "ffffffff00000000"]
    items = [
        Item("A/A149.jpg", "A", far[0], 149),  # block 0
        Item("A/A150.jpg", "A", far[1], 150),  # block 1, one frame later: same group
        Item("A/A290.jpg", "A", far[2], 290),  # block 1
        Item("A/A460.jpg", "A", far[3], 460),  # block 3, far away: its own group
    ]
    groups = assign_groups(items, "frame", block_frames=150, edge_frames=3, threshold=2)
    assert groups[0] == groups[1] == groups[2] == "A:blk0+blk1"
    assert groups[3] == "A:blk3"


def test_near_duplicates_merge_blocks_across_the_class() -> None:
    items = [
        Item("A/A10.jpg", "A", "8000000000000000", 10),
        Item("A/A2000.jpg", "A", "8000000000000001", 2000),  # far frame, same picture
        Item("A/A900.jpg", "A", "7fffffffffffffff", 900),
    ]
    groups = assign_groups(items, "frame", 150, 3, 2)
    assert groups[0] == groups[1] == "A:blk0+blk13"
    assert groups[2] == "A:blk6"


def test_split_is_reproducible_from_the_seed(real_items: list[Item], frame_groups) -> None:
    groups = frame_groups
    a = split_groups(real_items, groups, (0.7, 0.15, 0.15), seed=7)
    b = split_groups(real_items, groups, (0.7, 0.15, 0.15), seed=7)
    c = split_groups(real_items, groups, (0.7, 0.15, 0.15), seed=8)
    assert a == b
    assert a != c


def test_too_few_groups_warns() -> None:
    items = [Item(f"A/A{i}.jpg", "A", f"{i:016x}", i) for i in (1, 2)]
    groups = assign_groups(items, "frame", 150, 3, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = split_groups(items, groups, (0.7, 0.15, 0.15), seed=0)
    assert splits == ["train", "train"]
    assert any("1 group(s) for 3 splits" in str(w.message) for w in caught)

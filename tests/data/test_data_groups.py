"""Signer/source-disjoint splits and whole-group holdouts, on real Kaggle frames + Massey hands.

data/external_sample names carry the signer (``hand1_a_bot_seg_1_cropped.jpeg``): hand1 and
hand2 (52 each), hand4 (25), hand5 (1).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from pathlib import Path

import pytest
from asl_testkit.cli import run_script
from PIL import Image

from asl_recognition.classes import CLASSES
from asl_recognition.data.groups import (
    HoldoutRule,
    assign_holdout,
    parse_holdouts,
    split_whole_groups,
)
from asl_recognition.data.publish import publish_dataset
from asl_recognition.paths import REPO_ROOT
from asl_recognition.store import get_store
from asl_recognition.store.base import MANIFEST_NAME

SIZE = 16  # small: these tests are about where files go, not pixels


@pytest.fixture(scope="module")
def raw(merged: dict) -> dict:
    """The merged raw version (kaggle + massey) of this module's workspace."""
    return {"ws": merged["ws"], "id": merged["out"]["raw_dataset_id"]}


@pytest.fixture
def ws(raw, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ASL_WORKSPACE", str(raw["ws"]))
    monkeypatch.setenv("ASL_OFFLINE", "1")
    return raw["ws"]


def _manifest(dataset_id: str) -> tuple[dict, Path]:
    store = get_store()
    folder = store.local_copy(store.get(dataset_id=dataset_id))
    return json.loads((folder / MANIFEST_NAME).read_text()), folder


def _splits_of(manifest: dict, key) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for split, entries in manifest["splits"].items():
        for e in entries:
            if key(e) is not None:
                found[key(e)].add(split)
    return found


def test_group_by_signer_keeps_each_signer_in_one_split(raw, ws) -> None:
    out = publish_dataset(
        raw_version=raw["id"], group_by="signer", image_size=SIZE, progress=False
    )
    manifest, _ = _manifest(out["dataset_id"])
    assert manifest["grouping"] == "signer" and set(manifest["splits"]) == {"train", "val", "test"}
    signers = _splits_of(manifest, lambda e: e["signer"] and f"{e['data_source']}/{e['signer']}")
    assert set(signers) == {"massey/hand1", "massey/hand2", "massey/hand4", "massey/hand5"}
    assert all(len(s) == 1 for s in signers.values()), signers
    assert len(set().union(*signers.values())) >= 2  # signers really are spread over splits
    # Kaggle frames (no signer in their names) fall back to leak-free frame blocks per class
    groups = _splits_of(manifest, lambda e: e["group"])
    assert all(len(s) == 1 for s in groups.values())
    kaggle = [e for es in manifest["splits"].values() for e in es if e["data_source"] == "kaggle"]
    assert all(e["signer"] is None and ":blk" in e["group"] for e in kaggle)
    assert {e["class"] for e in manifest["splits"]["train"]} == set(CLASSES)


def test_group_by_source_keeps_each_source_in_one_split(raw, ws) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = publish_dataset(
            raw_version=raw["id"], group_by="source", image_size=SIZE, progress=False
        )
    manifest, _ = _manifest(out["dataset_id"])
    sources = _splits_of(manifest, lambda e: e["data_source"])
    assert {k: len(v) for k, v in sources.items()} == {"kaggle": 1, "massey": 1}
    # the bigger source (massey: 130 files, kaggle: 116) fills train first
    assert (sources["massey"], sources["kaggle"]) == ({"train"}, {"val"})
    assert any("left empty" in str(w.message) for w in caught)  # 2 sources, 3 splits


def test_holdout_signers_go_to_their_own_split_only(raw, ws) -> None:
    out = publish_dataset(
        raw_version=raw["id"],
        group_by="signer",
        holdout_group=["massey:hand4", "massey:hand5"],
        image_size=SIZE,
        progress=False,
    )
    manifest, folder = _manifest(out["dataset_id"])
    assert set(manifest["splits"]) == {"train", "val", "test", "holdout"}
    assert manifest["holdout"] == {
        "by": ["group=massey:hand4", "group=massey:hand5"],
        "labels": ["massey/hand4", "massey/hand5"],
    }
    assert manifest["sources"] == ["kaggle", "massey"]
    holdout = manifest["splits"]["holdout"]
    assert len(holdout) == 26 and out["counts"]["holdout"] == 26
    assert out["holdout_labels"] == ["massey/hand4", "massey/hand5"]
    for e in holdout:
        assert e["holdout_label"] == f"massey/{e['signer']}" and e["data_source"] == "massey"
        assert e["path"].startswith(f"holdout/{e['class']}/") and (folder / e["path"]).is_file()
    for split in ("train", "val", "test"):
        for e in manifest["splits"][split]:
            assert e["signer"] not in ("hand4", "hand5") and "holdout_label" not in e
            assert {"data_source", "signer"} <= set(e)
    with Image.open(folder / holdout[0]["path"]) as img:
        assert img.size == (SIZE, SIZE)
    listed = {e["path"] for es in manifest["splits"].values() for e in es}
    ds = get_store().get(dataset_id=out["dataset_id"])
    assert {f.path for f in ds.files} == listed | {MANIFEST_NAME}
    assert ds.metadata["holdout_labels"] == ["massey/hand4", "massey/hand5"]
    assert ds.metadata["counts_per_source"]["massey"]["holdout"] == 26
    assert ds.metadata["holdout_near_duplicates"] == 0  # no copy of a held-out hand in train
    # the other signers still split without crossing
    assert all(len(s) == 1 for s in _splits_of(manifest, lambda e: e["signer"]).values())


def test_holdout_source_with_a_glob_pattern_too(raw, ws) -> None:
    out = publish_dataset(
        raw_version=raw["id"],
        holdout_source=["massey"],
        holdout_group=["*:hand[12]"],  # already inside the massey holdout: the source rule wins
        image_size=SIZE,
        progress=False,
    )
    manifest, _ = _manifest(out["dataset_id"])
    holdout = manifest["splits"]["holdout"]
    assert len(holdout) == 130 and {e["holdout_label"] for e in holdout} == {"massey"}
    assert manifest["holdout"]["labels"] == ["massey"]
    assert all(
        e["data_source"] == "kaggle"
        for s in ("train", "val", "test")
        for e in manifest["splits"][s]
    )


def test_holdout_emptying_some_classes_warns_but_publishes(raw, ws) -> None:
    with pytest.warns(UserWarning, match="no train image for class.*del, nothing, space"):
        out = publish_dataset(
            raw_version=raw["id"], holdout_source=["kaggle"], image_size=SIZE, progress=False
        )
    manifest, _ = _manifest(out["dataset_id"])
    assert {e["class"] for e in manifest["splits"]["train"]} == set(CLASSES) - {
        "del",
        "nothing",
        "space",
    }
    ds = get_store().get(dataset_id=out["dataset_id"])
    assert ds.metadata["classes_without_train"] == ["del", "nothing", "space"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"holdout_source": ["masey"]},
            "--holdout-source 'masey': no such source (sources: kaggle, massey)",
        ),
        ({"holdout_group": ["massey:hand9"]}, "--holdout-group 'massey:hand9' matches no file"),
        (
            {"holdout_group": ["flickr:hand1"]},
            "--holdout-group 'flickr:hand1': no source 'flickr'",
        ),
        ({"holdout_group": ["massey:"]}, "expected SOURCE:SIGNER"),
        ({"holdout_source": ["kaggle", "massey"]}, "nothing left for train/val/test"),
        ({"signer_pattern": "(hand"}, "--signer-pattern '(hand'"),
        ({"group_by": "session"}, "--group-by: 'session' is not one of"),
    ],
)
def test_bad_holdouts_are_refused_and_publish_nothing(raw, ws, kwargs, message) -> None:
    before = [v.id for v in get_store().list_versions("ASL")]
    # SourceSpecError for sources and holdouts; OptionError (typing, as on the command line)
    with pytest.raises(ValueError) as caught:
        publish_dataset(raw_version=raw["id"], image_size=SIZE, progress=False, **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert [v.id for v in get_store().list_versions("ASL")] == before


def test_publish_task_exits_2_with_one_line(raw, ws) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k != "ASL_STEP_OUTPUTS"},
        "ASL_WORKSPACE": str(ws),
        "ASL_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("CLEARML_CACHE_DIR", None)
    before = [v.id for v in get_store().list_versions("ASL")]
    result = run_script(
        "tasks/publish_dataset.py",
        "--raw-version",
        raw["id"],
        "--holdout-group",
        "massey:hand4",
        "--holdout-group",
        "massey:hand7",
        env=env,
        timeout=180,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "publish_dataset: error: --holdout-group 'massey:hand7' matches no file (signers seen:"
    )
    assert [v.id for v in get_store().list_versions("ASL")] == before


def test_whole_group_split_and_rules_on_their_own() -> None:
    groups = ["h1"] * 650 + ["h2"] * 645 + ["h3"] * 130
    placed = split_whole_groups(groups, (0.7, 0.15, 0.15), seed=0)
    assert sorted(placed.values()) == ["test", "train", "val"]  # three signers, three splits
    assert placed["h1"] == "train"
    rules = parse_holdouts(["b"], ["a:p*"], ["a", "b"])
    assert [r.describe() for r in rules] == ["source=b", "group=a:p*"]
    labels = assign_holdout(rules, ["a", "a", "b", "a"], ["p1", "q1", None, None])
    assert labels == ["a/p1", None, "b", None]
    assert HoldoutRule("group", "*", "p1", "p1").label("z", "p1") == "z/p1"


def test_near_duplicates_across_the_holdout_are_counted() -> None:
    from asl_recognition.data.candidates import holdout_leaks

    hashes = ["0000000000000000", "0000000000000001", "ffffffffffffffff", "fffffffffffffff0"]
    with pytest.warns(UserWarning, match="1 phash near-duplicate pair"):
        assert holdout_leaks(hashes, ["h", None, None, None], 2) == 1
    assert holdout_leaks(hashes, ["h", "h", None, None], 2) == 0
    with pytest.warns(UserWarning, match="1 phash near-duplicate pair"):
        assert holdout_leaks(hashes, [None, None, "h", None], 4) == 1

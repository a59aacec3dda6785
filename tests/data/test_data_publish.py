"""Publishing ASL from ASL_raw: contract layout, lineage, reuse, leak flag, logger calls."""

from __future__ import annotations

import json
import shutil
import warnings
from collections import defaultdict
from pathlib import Path
from unittest.mock import Mock

import pandas as pd
import pytest
from asl_testkit.workspaces import offline_workspace
from PIL import Image

from asl_recognition.classes import CLASSES
from asl_recognition.data.publish import publish_dataset
from asl_recognition.data.raw import validate_raw
from asl_recognition.data.split import near_pairs
from asl_recognition.store import get_store
from asl_recognition.store.base import MANIFEST_NAME

PER_CLASS = 8
N_IMAGES = PER_CLASS * len(CLASSES)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """8 real frames per class from data/sample (enough for 3 splits, fast to preprocess)."""
    root = tmp_path_factory.mktemp("src") / "kaggle"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for src in sorted((sample_dir / cls).glob("*.jpg"))[:PER_CLASS]:
            shutil.copyfile(src, root / cls / src.name)
    return root


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, source: Path):
    """The source validated and published once, in a workspace shared by this module."""
    ws = tmp_path_factory.mktemp("ws")
    with offline_workspace(ws):
        raw = validate_raw(source, min_per_class=PER_CLASS, report_dir=ws / "rep", progress=False)
        out = publish_dataset(progress=False)
        yield {"ws": ws, "raw": raw, "out": out, "store": get_store()}


def test_layout_and_manifest_follow_the_contract(published) -> None:
    store, out = published["store"], published["out"]
    ds = store.get(dataset_id=out["dataset_id"])
    folder = store.local_copy(ds)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert set(manifest) >= {
        "classes",
        "image_size",
        "grouping",
        "leaky",
        "seed",
        "raw_dataset_id",
        "splits",
    }
    assert manifest["classes"] == list(CLASSES)
    assert (manifest["image_size"], manifest["grouping"], manifest["leaky"]) == (
        64,
        "frame",
        False,
    )
    assert set(manifest["splits"]) == {"train", "val", "test"}
    assert manifest["sources"] == ["kaggle"] and manifest["raw_dataset_ids"] == [ds.parents[0]]
    assert manifest["holdout"] == {"by": [], "labels": []}
    raw = store.get(dataset_id=published["raw"]["raw_dataset_id"])
    raw_paths = {f.path for f in raw.files}
    listed = set()
    for split, entries in manifest["splits"].items():
        for e in entries:
            assert set(e) == {
                "path",
                "source",
                "group",
                "class",
                "data_source",
                "signer",
                "raw_dataset_id",
            }
            assert (e["data_source"], e["signer"], e["raw_dataset_id"]) == ("kaggle", None, raw.id)
            assert e["path"].startswith(f"{split}/{e['class']}/")
            assert e["source"] in raw_paths and e["group"].startswith(e["class"] + ":blk")
            listed.add(e["path"])
    assert listed | {MANIFEST_NAME} == {f.path for f in ds.files}
    assert len(listed) == N_IMAGES == sum(out["counts"].values())
    for rel in sorted(listed)[:: len(listed) // 10]:
        with Image.open(folder / rel) as img:
            assert (img.size, img.mode) == ((64, 64), "RGB")
    for split in ("train", "val", "test"):  # ImageFolder-ready: one folder per class
        assert sorted(p.name for p in (folder / split).iterdir()) == sorted(CLASSES)


def test_lineage_points_at_the_raw_version(published) -> None:
    store, out = published["store"], published["out"]
    ds = store.get(dataset_id=out["dataset_id"])
    raw_id = published["raw"]["raw_dataset_id"]
    assert ds.parents == [raw_id] and out["raw_dataset_id"] == raw_id
    assert [d.id for d in store.lineage(ds)] == [ds.id, raw_id]
    assert [d.name for d in store.lineage(ds)] == ["ASL", "ASL_raw"]
    assert not {f.path for f in ds.files} & {f.path for f in store.get(dataset_id=raw_id).files}


def test_published_splits_do_not_leak(published) -> None:
    store, out = published["store"], published["out"]
    manifest = json.loads(
        (store.local_copy(store.get(dataset_id=out["dataset_id"])) / MANIFEST_NAME).read_text()
    )
    split_of_source = {e["source"]: s for s, es in manifest["splits"].items() for e in es}
    splits_of_group = defaultdict(set)
    for s, entries in manifest["splits"].items():
        for e in entries:
            splits_of_group[e["group"]].add(s)
    assert all(len(v) == 1 for v in splits_of_group.values())
    scan = pd.read_csv(published["ws"] / "rep" / "scan.csv")
    phash = dict(zip(scan["path"], scan["phash"]))
    sources = sorted(split_of_source)
    for i, j in near_pairs([phash[s] for s in sources], 2):
        assert split_of_source[sources[i]] == split_of_source[sources[j]]


def test_unchanged_inputs_reuse_and_changed_options_make_a_new_version(
    published, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASL_WORKSPACE", str(published["ws"]))
    monkeypatch.setenv("ASL_OFFLINE", "1")
    again_raw = validate_raw(
        source, min_per_class=PER_CLASS, report_dir=published["ws"] / "rep2", progress=False
    )
    assert (
        again_raw["reused"] and again_raw["raw_dataset_id"] == published["raw"]["raw_dataset_id"]
    )
    again = publish_dataset(raw_version=again_raw["raw_dataset_id"], progress=False)
    assert again["reused"] is True and again["dataset_id"] == published["out"]["dataset_id"]
    other = publish_dataset(seed=1, image_size=32, progress=False)
    assert other["reused"] is False and other["dataset_id"] != published["out"]["dataset_id"]
    assert other["dataset_version"] == "1.0.1"
    versions = get_store().list_versions("ASL")
    assert [v.version for v in versions] == ["1.0.0", "1.0.1"]


def test_random_split_is_published_as_leaky(published, monkeypatch) -> None:
    monkeypatch.setenv("ASL_WORKSPACE", str(published["ws"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = publish_dataset(group_by="none", image_size=16, progress=False)
    assert any("leak" in str(w.message) for w in caught)
    store = get_store()
    ds = store.get(dataset_id=out["dataset_id"])
    manifest = json.loads((store.local_copy(ds) / MANIFEST_NAME).read_text())
    assert manifest["leaky"] is True and manifest["grouping"] == "none"
    assert "leaky" in ds.tags and out["leaky"] is True


def test_split_histograms_and_preview_go_to_the_logger(published, monkeypatch) -> None:
    monkeypatch.setenv("ASL_WORKSPACE", str(published["ws"]))
    mock_logger, mock_upload = Mock(name="mock_logger"), Mock(name="mock_upload")
    out = publish_dataset(logger=mock_logger, upload=mock_upload, progress=False)
    assert out["reused"]
    histograms = {
        c.kwargs["series"]: c.kwargs for c in mock_logger.report_histogram.call_args_list
    }
    assert set(histograms) == {"train", "val", "test"}
    assert sum(sum(h["values"]) for h in histograms.values()) == N_IMAGES
    assert histograms["val"]["xlabels"] == list(CLASSES)
    (image_call,) = mock_logger.report_image.call_args_list
    assert Path(image_call.kwargs["local_path"]).is_file()
    with Image.open(image_call.kwargs["local_path"]) as grid:
        assert grid.size[0] == 640  # 10 cells of 64 px
    table = mock_logger.report_table.call_args.kwargs["table_plot"]
    assert dict(zip(table["split"], table["images"])) == out["counts"]
    assert [c.args[0] for c in mock_upload.call_args_list] == ["manifest", "split_histogram"]


def test_each_run_writes_its_plots_in_a_folder_of_its_own(published, monkeypatch) -> None:
    """Two runs publishing at once (other options, one workspace) must not log or upload each
    other's histogram: before, both wrote reports/ASL/split_histogram.png."""
    monkeypatch.setenv("ASL_WORKSPACE", str(published["ws"]))
    paths = []
    for _ in range(2):
        mock_upload = Mock(name="mock_upload")
        publish_dataset(upload=mock_upload, progress=False)
        (path,) = [c.args[1] for c in mock_upload.call_args_list if c.args[0] == "split_histogram"]
        paths.append(Path(path))
    assert paths[0].parent != paths[1].parent
    assert {p.parent.parent for p in paths} == {published["ws"] / "reports" / "ASL"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_publish_reuses_the_scan_phash_and_refuses_a_raw_version_without_one(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every phash comes from validate_raw's scan (none is computed again at publish); a raw
    version that records none is refused in one line, before any image is read."""
    import imagehash

    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    raw = validate_raw(
        source, min_per_class=PER_CLASS, report_dir=tmp_path / "rep", progress=False
    )
    store = get_store()
    version = store.get(dataset_id=raw["raw_dataset_id"])
    scan = pd.read_csv(tmp_path / "rep" / "scan.csv")
    assert version.metadata["phash"] == dict(zip(scan["path"], scan["phash"]))

    counting_phash = Mock(name="counting_phash", side_effect=imagehash.phash)
    monkeypatch.setattr(imagehash, "phash", counting_phash)
    publish_dataset(raw_version=version.id, workers=1, progress=False)
    assert counting_phash.call_count == 0  # every hash came from the scan

    meta = {k: v for k, v in version.metadata.items() if k not in ("phash", "description")}
    folder = store.local_copy(version)
    unscanned = store.create(
        "ASL_raw", {f.path: folder / f.path for f in version.files}, metadata=meta
    )
    with pytest.raises(ValueError) as info:
        publish_dataset(raw_version=unscanned.id, workers=1, progress=False)
    assert str(info.value) == (
        f"ASL_raw {unscanned.id} records no scan phash; validate its source again"
    )
    assert counting_phash.call_count == 0


def test_one_image_per_class_is_refused_at_publish(asl_workspace, sample_dir, tmp_path) -> None:
    """#19.14: ``--min-per-class 0`` let one image per class through and publish made a version
    with empty val and test splits that no later step can use."""
    root = tmp_path / "one"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        first = sorted((sample_dir / cls).glob("*.jpg"))[0]
        shutil.copyfile(first, root / cls / first.name)
    raw = validate_raw(str(root), min_per_class=0, report_dir=tmp_path / "rep", progress=False)
    assert raw["raw_dataset_id"]
    with pytest.raises(ValueError) as info:
        publish_dataset(image_size=16, progress=False)
    message = str(info.value)
    assert "\n" not in message and "the split leaves" in message and "empty" in message
    assert "nothing was published" in message
    assert get_store().list_versions("ASL") == []
    assert not (asl_workspace / "reports" / "ASL").exists()  # nor a report folder left behind

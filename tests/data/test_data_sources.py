"""Several raw sources in one ASL_raw version, the per-source report, and multi-parent lineage.

Real images only: Kaggle frames from data/sample and Massey hand crops from
data/external_sample (which has no del/nothing/space: fine, the minimum applies to the merge).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock
from unittest.mock import Mock

import clearml
import pandas as pd
import pytest
from asl_testkit.cli import run_script
from asl_testkit.images import MERGED_PER_CLASS, kaggle_slice
from PIL import Image

from asl_recognition.classes import CLASSES
from asl_recognition.data import reporting
from asl_recognition.data.publish import publish_dataset
from asl_recognition.data.raw import validate_raw
from asl_recognition.data.sources import (
    SourceSpecError,
    format_sources,
    parse_sources,
    signer_of,
    split_list,
)
from asl_recognition.store import get_store
from asl_recognition.store.base import MANIFEST_NAME
from asl_recognition.store.clearml_store import ClearMLDatasetStore
from asl_recognition.store.local import LocalDatasetStore

PER_CLASS = MERGED_PER_CLASS
LETTERS_ONLY = ["del", "nothing", "space"]


def test_merged_version_keeps_every_file_under_its_source(merged, external_dir: Path) -> None:
    out, store = merged["out"], merged["store"]
    assert out["usable"] and out["sources"] == ["kaggle", "massey"]
    raw = store.get(dataset_id=out["raw_dataset_id"])
    stored = {f.path for f in raw.files}
    kaggle = {
        f"kaggle/{p.relative_to(merged['kaggle']).as_posix()}"
        for p in merged["kaggle"].rglob("*.jpg")
    }
    massey = {
        f"massey/{p.relative_to(external_dir).as_posix()}" for p in external_dir.rglob("*.jpeg")
    }
    assert stored == kaggle | massey
    assert len(kaggle) == PER_CLASS * len(CLASSES) and len(massey) == 130
    assert [(s["name"], s["prefix"], s["data_root"]) for s in raw.metadata["sources"]] == [
        ("kaggle", "kaggle/", "kaggle"),
        ("massey", "massey/", "massey"),
    ]
    assert {"source:kaggle", "source:massey"} <= set(raw.tags)
    scan = pd.read_csv(merged["ws"] / "rep" / "scan.csv")
    assert dict(scan.groupby("source").size()) == {"kaggle": len(kaggle), "massey": 130}
    assert all(p.startswith(f"{s}/") for p, s in zip(scan["path"], scan["source"]))


def test_report_breaks_counts_down_per_source(merged) -> None:
    report = json.loads(Path(merged["out"]["report_path"]).read_text())
    per_source = report["per_source"]
    assert list(per_source) == ["kaggle", "massey"]
    kaggle, massey = per_source["kaggle"], per_source["massey"]
    assert (kaggle["total"], kaggle["valid"], kaggle["quarantined"]) == (116, 116, 0)
    assert kaggle["classes_missing"] == [] and kaggle["per_class"]["del"] == PER_CLASS
    assert massey["classes_missing"] == LETTERS_ONLY and massey["classes_present"] == 26
    assert massey["per_class"]["A"] == 5 and massey["per_class"]["space"] == 0
    summary = report["summary"]
    for cls in CLASSES:  # the merged counts are the sum of the per-source ones
        assert summary["per_class"][cls] == kaggle["per_class"][cls] + massey["per_class"][cls]
    # GX ran on the merged table, which carries the source column (checked by an expectation)
    files_suite = json.loads((merged["ws"] / "rep" / "gx_results.json").read_text())
    source_checks = [
        r
        for r in files_suite["asl_raw_files"]["results"]
        if r["expectation_config"]["kwargs"].get("column") == "source"
    ]
    assert source_checks and all(r["success"] for r in source_checks)
    with Image.open(merged["ws"] / "rep" / "class_histogram_per_source.png") as png:
        assert png.size[0] > 500


def test_per_source_table_and_histograms_go_to_the_logger(merged) -> None:
    report = json.loads(Path(merged["out"]["report_path"]).read_text())
    mock_logger = Mock(name="mock_logger")
    png = merged["ws"] / "rep" / "class_histogram_per_source.png"
    reporting.log_validation(mock_logger, report, None, png)
    tables = {
        c.kwargs["title"]: c.kwargs["table_plot"] for c in mock_logger.report_table.call_args_list
    }
    table = tables["validation per source"]
    assert list(table["source"]) == ["kaggle", "massey"]
    assert list(table["valid"]) == [116, 130]
    assert table.loc[table["source"] == "massey", "classes missing"].item() == "del nothing space"
    series = {
        c.kwargs["series"]: c.kwargs["values"]
        for c in mock_logger.report_histogram.call_args_list
        if c.kwargs["title"] == "class histogram per source"
    }
    assert set(series) == {"kaggle", "massey"} and sum(series["massey"]) == 130
    assert any(c.kwargs["local_path"] == str(png) for c in mock_logger.report_image.call_args_list)


def test_source_specs_are_parsed_and_refused_clearly() -> None:
    (a,) = parse_sources("../shared/data/asl_kaggle_sample")
    assert (a.name, a.path) == ("asl_kaggle_sample", Path("../shared/data/asl_kaggle_sample"))
    specs = parse_sources(["kaggle=data/sample", "massey=data/external_sample/"])
    assert [s.name for s in specs] == ["kaggle", "massey"]
    assert parse_sources(format_sources(["kaggle=data/sample", "m=x"]))[1].name == "m"
    assert parse_sources("upload.zip")[0].name == "upload"
    assert parse_sources("x/a=b/c")[0].path == Path("x/a=b/c")  # '=' inside a path
    for bad, message in [
        ("=data/sample", "expected NAME=PATH"),
        ("kaggle=", "expected NAME=PATH"),
        ("bad!name=data/sample", "must be letters"),
        (["a=data/sample", "a=data/external_sample"], "duplicate source name 'a'"),
        (["data/sample", "other/sample"], "duplicate source name 'sample'"),
        ([], "no --source"),
    ]:
        with pytest.raises(SourceSpecError, match=message) as caught:
            parse_sources(bad)
        assert "\n" not in str(caught.value)
    assert signer_of("massey/A/hand1_a_bot_seg_1_cropped.jpeg") == "hand1"
    assert signer_of("kaggle/A/A1008.jpg") is None
    assert signer_of("s/p07_x.jpg", r"p(\d+)_") == "07"
    assert split_list(["a,b", "c"]) == ["a", "b", "c"] and split_list("") == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "kaggle="], "validate_raw: error: --source 'kaggle=': expected NAME=PATH"),
        (
            ["--source", "a=data/sample", "--source", "a=data/external_sample"],
            "validate_raw: error: duplicate source name 'a'",
        ),
    ],
)
def test_validate_task_refuses_malformed_sources(args, message, task_env, asl_workspace) -> None:
    result = run_script("tasks/validate_raw.py", *args, env=task_env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
    assert not (asl_workspace / "datasets").exists()  # nothing published


def test_published_version_has_every_raw_version_as_parent(
    merged, sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two raw versions (different Kaggle frames, one also with Massey) feed one ASL version."""
    monkeypatch.setenv("ASL_WORKSPACE", str(merged["ws"]))
    first = merged["out"]["raw_dataset_id"]
    other = kaggle_slice(sample_dir, tmp_path / "frames2", PER_CLASS, per_class=3)
    second = validate_raw(
        f"kaggle2={other}", min_per_class=3, report_dir=tmp_path / "rep", progress=False
    )["raw_dataset_id"]
    out = publish_dataset(raw_version=f"{first},{second}", image_size=16, progress=False)
    store = get_store()
    ds = store.get(dataset_id=out["dataset_id"])
    assert ds.parents == [first, second] and out["raw_dataset_ids"] == [first, second]
    lineage = store.lineage(ds)
    assert [d.id for d in lineage] == [ds.id, first, second]
    assert [d.name for d in lineage] == ["ASL", "ASL_raw", "ASL_raw"]
    manifest = json.loads((store.local_copy(ds) / MANIFEST_NAME).read_text())
    assert manifest["sources"] == ["kaggle", "massey", "kaggle2"]
    assert manifest["raw_dataset_ids"] == [first, second]
    entries = [e for es in manifest["splits"].values() for e in es]
    by_source = {s: sum(e["data_source"] == s for e in entries) for s in manifest["sources"]}
    assert by_source == {"kaggle": 116, "massey": 130, "kaggle2": 3 * len(CLASSES)}
    assert {e["raw_dataset_id"] for e in entries if e["data_source"] == "kaggle2"} == {second}
    # a single source (bare path) keeps the plain <CLASS>/<file> layout
    single = store.get(dataset_id=second)
    assert all(f.path.split("/")[0] in CLASSES for f in single.files)
    assert single.metadata["sources"][0]["name"] == "kaggle2"


def test_local_store_lineage_with_several_parents_is_breadth_first(
    tmp_path: Path, sample_dir: Path
) -> None:
    store = LocalDatasetStore(tmp_path / "datasets")
    frames = sorted((sample_dir / "A").glob("*.jpg"))
    a = store.create("ASL_raw", {"A/a.jpg": frames[0]})
    b = store.create("ASL_raw", {"A/b.jpg": frames[1]})
    c = store.create("ASL_raw", {"A/c.jpg": frames[2]}, parents=[a.id])
    child = store.create("ASL", {"train/A/x.jpg": frames[3]}, parents=[c.id, b.id])
    assert store.get(dataset_id=child.id).parents == [c.id, b.id]
    assert [d.id for d in store.lineage(child)] == [child.id, c.id, b.id, a.id]
    with pytest.raises(LookupError):
        store.create("ASL", {"x.jpg": frames[0]}, parents=[a.id, "no-such-id"])


class MockClearMLDataset:
    """Stands in for clearml.Dataset (no server here); records what the store asks of it."""

    created: list[dict] = []

    def __init__(self, kwargs: dict) -> None:
        self.kwargs, self.id, self.name, self.version, self.tags = kwargs, "new", "ASL", "1", []

    @classmethod
    def create(cls, **kwargs):
        cls.created.append(kwargs)
        return cls(kwargs)

    def remove_files(self, **_kw) -> None:
        self.removed = True

    def add_files(self, path: str) -> None:
        self.added = sorted(p.name for p in Path(path).rglob("*") if p.is_file())

    def upload(self, **_kw) -> None: ...

    def set_metadata(self, *_a, **_kw) -> None: ...

    def finalize(self) -> None: ...

    def get_logger(self) -> Any:  # the store flushes the preview uploads through it
        return mock.create_autospec(clearml.Logger, instance=True)

    def get_dependency_graph(self) -> dict[str, list[str]]:  # clearml's real accessor
        parents = list(self.kwargs["parent_datasets"] or [])
        return {self.id: parents, **{p: [] for p in parents}}


def test_clearml_store_passes_every_parent(sample_dir: Path) -> None:
    from clearml import Dataset

    for method in ("create", "remove_files", "add_files", "get_dependency_graph", "finalize"):
        assert hasattr(Dataset, method), method  # the mock mirrors the installed clearml API
    store = ClearMLDatasetStore(dataset_cls=MockClearMLDataset)
    frame = sorted((sample_dir / "B").glob("*.jpg"))[0]
    version = store.create("ASL", {"train/B/x.jpg": frame}, parents=["raw1", "raw2"])
    assert MockClearMLDataset.created[-1]["parent_datasets"] == ["raw1", "raw2"]
    assert version.parents == ["raw1", "raw2"]


def test_a_raw_version_without_recorded_sources_is_refused_in_one_line() -> None:
    """Only validate_raw's versions are published (it always records its sources); anything
    else is named, not guessed from a single-source layout."""
    from asl_recognition.data.candidates import raw_sources
    from asl_recognition.data.sources import SourceSpecError
    from asl_recognition.store.base import DatasetVersion

    stray = DatasetVersion("abc123", "ASL_raw", "1.0.0", [], [], {"data_root": "x"})
    with pytest.raises(SourceSpecError, match="ASL_raw version abc123 records no sources") as e:
        raw_sources(stray, "ASL_raw")
    assert "\n" not in str(e.value)
    recorded = {"sources": [{"name": "kaggle", "prefix": "kaggle/", "data_root": "", "n": 3}]}
    kept = raw_sources(DatasetVersion("d", "ASL_raw", "1.0.0", [], [], recorded), "ASL_raw")
    assert kept == [{"name": "kaggle", "prefix": "kaggle/", "data_root": ""}]

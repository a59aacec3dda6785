"""ClearML Datasets behind the dataset-store contract (needs a ClearML server).

A child version is created with ``parent_datasets`` for lineage, but ClearML children inherit
their parents' files; the processed ``ASL`` dataset must not carry the raw images, so inherited
files are removed before the new ones are added (raw and processed stay apart, like a feature
store keeps raw and derived features).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asl_recognition.store.base import (
    MANIFEST_NAME,
    DatasetNotFoundError,
    DatasetStore,
    DatasetVersion,
    FileEntry,
    sha256_file,
)

RECORD_NAME = "asl_store_record.json"


def _direct_parents(ds: Any) -> list[str]:
    """Every direct parent id, in order (clearml 2.x has no public get_parents(): the dependency
    graph maps each version id to its direct parents)."""
    return list((ds.get_dependency_graph() or {}).get(ds.id) or [])


class ClearMLDatasetStore(DatasetStore):
    backend = "clearml"

    def __init__(self, project: str = "ASL/datasets", dataset_cls: Any = None) -> None:
        if dataset_cls is None:
            from clearml import Dataset as dataset_cls  # imported lazily: needs a server
        self.project = project
        self.Dataset = dataset_cls

    def create(
        self,
        name: str,
        files: Mapping[str, str | Path],
        parents: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        description: str = "",
    ) -> DatasetVersion:
        entries = [
            FileEntry(path=rel, sha256=sha256_file(src), size=Path(src).stat().st_size)
            for rel, src in sorted(files.items())
        ]
        ds = self.Dataset.create(
            dataset_name=name,
            dataset_project=self.project,
            parent_datasets=list(parents) or None,
            dataset_tags=list(tags) or None,
            description=description,
        )
        if parents:
            ds.remove_files(dataset_path="*", recursive=True)
        with tempfile.TemporaryDirectory(prefix="asl_stage_") as stage:
            for rel, src in files.items():
                dest = Path(stage) / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
            record = {"files": [e.__dict__ for e in entries], "metadata": dict(metadata or {})}
            (Path(stage) / RECORD_NAME).write_text(json.dumps(record))
            ds.add_files(path=stage)
            ds.upload(show_progress=True)
        ds.set_metadata(dict(metadata or {}), metadata_name="asl_metadata", ui_visible=True)
        ds.finalize()
        return self._to_version(ds, entries, dict(metadata or {}))

    def _to_version(
        self, ds: Any, entries: list[FileEntry] | None = None, metadata: dict | None = None
    ) -> DatasetVersion:
        if entries is None:
            record = json.loads((Path(ds.get_local_copy()) / RECORD_NAME).read_text())
            entries = [FileEntry(**f) for f in record["files"]]
            metadata = record["metadata"]
        return DatasetVersion(
            id=ds.id,
            name=ds.name,
            version=str(ds.version),
            parents=_direct_parents(ds),
            files=entries,
            metadata=metadata or {},
            tags=list(ds.tags or []),
            backend=self.backend,
        )

    def get(
        self,
        name: str | None = None,
        version: str | None = None,
        dataset_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> DatasetVersion:
        try:
            if dataset_id:
                ds = self.Dataset.get(dataset_id=dataset_id)
            else:
                ds = self.Dataset.get(
                    dataset_project=self.project,
                    dataset_name=name,
                    dataset_version=None if version in (None, "", "latest") else version,
                    dataset_tags=list(tags) or None,
                    only_completed=True,
                )
        except ValueError as exc:
            raise DatasetNotFoundError(str(exc)) from exc
        return self._to_version(ds)

    def list_versions(self, name: str) -> list[DatasetVersion]:
        rows = self.Dataset.list_datasets(
            dataset_project=self.project, partial_name=name, only_completed=True
        )
        rows = [r for r in rows if r.get("name") == name]
        return [self.get(dataset_id=r["id"]) for r in sorted(rows, key=lambda r: r["created"])]

    def local_copy(self, dataset: DatasetVersion) -> Path:
        return Path(self.Dataset.get(dataset_id=dataset.id).get_local_copy())


__all__ = ["ClearMLDatasetStore", "MANIFEST_NAME"]

"""ClearML Datasets behind the dataset-store contract (needs a ClearML server).

A child version is created with ``parent_datasets`` for lineage, but ClearML children inherit
their parents' files; the processed ``ASL`` dataset must not carry the raw images, so inherited
files are removed before the new ones are added (raw and processed stay apart, like a feature
store keeps raw and derived features).

The version's record (file list with hashes, caller metadata) is a small JSON artifact on the
dataset's task (``Dataset.set_metadata``), so reading a version never downloads its images.
Where the files go: ``ASL_OUTPUT_URI`` when set, else the SDK default (the ClearML files server);
``ASL_OUTPUT_URI=none`` (weights stay local) also leaves datasets to the SDK default.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asl_recognition.clearml_env import OUTPUT_URI_ENV, configured_output_uri
from asl_recognition.hashing import copy_hashed, sha256_file
from asl_recognition.store.base import (
    MANIFEST_NAME,
    SHA256_HEX,
    DatasetIntegrityError,
    DatasetNotFoundError,
    DatasetStore,
    DatasetVersion,
    FileEntry,
    check_copied,
    path_problem,
)

# The record as a dataset metadata artifact (read with Dataset.get_metadata, no image download).
RECORD_ARTIFACT = "asl_store_record"


def dataset_alias(dataset: DatasetVersion) -> str:
    """The name a consuming task lists a version under: name and version, so that a task
    merging several versions of one dataset (publish_dataset's raw versions) lists each."""
    return f"{dataset.name} {dataset.version}"


def _direct_parents(ds: Any) -> list[str]:
    """Every direct parent id, in order (clearml 2.x has no public get_parents(): the dependency
    graph maps each version id to its direct parents)."""
    return list((ds.get_dependency_graph() or {}).get(ds.id) or [])


def _stage(stage: Path, rel: str, source: Path) -> FileEntry:
    """Copy one file into the upload folder; its entry hashes the very bytes uploaded."""
    dest = stage / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    sha, size = copy_hashed(source, dest)
    return FileEntry(path=rel, sha256=sha, size=size)


class ClearMLDatasetStore(DatasetStore):
    backend = "clearml"

    def __init__(
        self,
        project: str = "ASL/datasets",
        dataset_cls: Any = None,
        output_uri: str | None = None,
    ) -> None:
        if dataset_cls is None:
            from clearml import Dataset as dataset_cls  # imported lazily: needs a server
        self.project = project
        self.Dataset = dataset_cls
        self.output_uri = output_uri

    def create(
        self,
        name: str,
        files: Mapping[str, str | Path],
        parents: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        description: str = "",
        expected: Mapping[str, str] | None = None,
    ) -> DatasetVersion:
        with tempfile.TemporaryDirectory(prefix="asl_stage_") as stage:
            # Staged (and checked) before the server sees a dataset: a refused file leaves none.
            entries = [_stage(Path(stage), rel, Path(src)) for rel, src in sorted(files.items())]
            for entry in entries:
                check_copied(entry.path, entry.sha256, expected)
            ds = self.Dataset.create(
                dataset_name=name,
                dataset_project=self.project,
                parent_datasets=list(parents) or None,
                dataset_tags=list(tags) or None,
                output_uri=self.output_uri,
                description=description,
            )
            if parents:
                ds.remove_files(dataset_path="*", recursive=True)
            ds.add_files(path=stage)
            ds.upload(show_progress=True)
            # The preview images are uploaded in the background from the staged files: wait,
            # or the folder is gone first ("Skipping upload, could not find object file").
            ds.get_logger().flush(wait=True)
        record = {"files": [e.__dict__ for e in entries], "metadata": dict(metadata or {})}
        # ui_visible=True only renders DataFrames; for a dict the SDK prints a "Skipping!" line.
        ds.set_metadata(record, metadata_name=RECORD_ARTIFACT, ui_visible=False)
        ds.finalize()
        return self._to_version(ds, record)

    def _read_record(self, ds: Any) -> dict[str, Any]:
        """The version's record, from its metadata artifact (no file of the version is fetched)."""
        record = ds.get_metadata(metadata_name=RECORD_ARTIFACT)
        if record is None:
            raise DatasetNotFoundError(
                f"dataset {ds.id} has no {RECORD_ARTIFACT} record: not made by this store"
            )
        if isinstance(record, str):  # a JSON artifact may come back as its text
            record = json.loads(record)
        problem = _record_problem(record)
        if problem:
            raise DatasetIntegrityError(
                f"dataset {ds.id}: its {RECORD_ARTIFACT} record is unreadable ({problem}); refused"
            )
        return record

    def _to_version(self, ds: Any, record: Mapping[str, Any] | None = None) -> DatasetVersion:
        record = record if record is not None else self._read_record(ds)
        return DatasetVersion(
            id=ds.id,
            name=ds.name,
            version=str(ds.version),
            parents=_direct_parents(ds),
            files=[FileEntry(**f) for f in record["files"]],
            metadata=dict(record.get("metadata") or {}),
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
        # A lookup reads the record only; the task that USES a version names it (local_copy).
        try:
            if dataset_id:
                ds = self.Dataset.get(dataset_id=dataset_id, silence_alias_warnings=True)
            else:
                ds = self.Dataset.get(
                    dataset_project=self.project,
                    dataset_name=name,
                    dataset_version=None if version in (None, "", "latest") else version,
                    dataset_tags=list(tags) or None,
                    only_completed=True,
                    silence_alias_warnings=True,
                )
        except ValueError as exc:
            raise DatasetNotFoundError(str(exc)) from exc
        return self._to_version(ds)

    def list_versions(self, name: str) -> list[DatasetVersion]:
        rows = self.Dataset.list_datasets(
            dataset_project=self.project, partial_name=f"^{re.escape(name)}$", only_completed=True
        )
        rows = [r for r in rows if r.get("name") == name]
        return [self.get(dataset_id=r["id"]) for r in sorted(rows, key=lambda r: r["created"])]

    def _used(self, dataset: DatasetVersion) -> Any:
        """The version as the running task consumes it: ``alias`` records its id as the task
        parameter ``Datasets/<alias>``, the web UI's "Datasets" section; without it the SDK
        records nothing (``clearml/datasets/dataset.py``, ``Dataset.get``)."""
        return self.Dataset.get(dataset_id=dataset.id, alias=dataset_alias(dataset))

    def local_copy(self, dataset: DatasetVersion) -> Path:
        """The SDK's cached copy, every listed file hashed against the record: the SDK reuses a
        cached folder after comparing file sizes only (``Dataset.get_local_copy``), so a
        same-size file altered in the cache was served as the version."""
        folder = Path(self._used(dataset).get_local_copy())
        _check_copy(dataset, folder, dataset.files)
        return folder

    def local_file(self, dataset: DatasetVersion, path: str) -> Path:
        """Only the chunk holding ``path``: ``get_local_copy(files=[path])`` fetches the chunks
        that contain those files (``clearml/datasets/dataset.py``, ``Dataset.get_local_copy``),
        not every image of the version. That file is hashed against the record."""
        entry = self._entry(dataset, path)
        folder = Path(self._used(dataset).get_local_copy(files=[path]))
        _check_copy(dataset, folder, [entry])
        return folder / path


def _record_problem(record: Any) -> str | None:
    """Why a record read back is not the one ``create`` wrote, or None. The SDK hands back a
    ``Path`` for an artifact it cannot parse (``Artifact.get``, clearml/binding/artifacts.py),
    which, like a list or a wrong field, had been a TypeError traceback for every lookup."""
    if not isinstance(record, dict):
        return f"the SDK gave a {type(record).__name__}, not a JSON object"
    files, metadata = record.get("files"), record.get("metadata") or {}
    if not isinstance(files, list) or not isinstance(metadata, dict):
        return "no file list or metadata object"
    for entry in files:
        if not isinstance(entry, dict) or set(entry) != {"path", "sha256", "size"}:
            return f"a file entry is not path, sha256 and size: {str(entry)[:80]}"
        if path_problem(entry["path"]):
            return path_problem(entry["path"])
        sha, size = entry["sha256"], entry["size"]
        if not (isinstance(sha, str) and SHA256_HEX.fullmatch(sha)) or type(size) is not int:
            return f"{str(entry['path'])[:80]!r} has no sha256 or size"
    return None


def _check_copy(dataset: DatasetVersion, folder: Path, entries: Sequence[FileEntry]) -> None:
    """Refuse, in one line, a listed file of the cached copy whose bytes are not the recorded
    ones (a regular file only: never read through a link)."""
    for entry in entries:
        path = folder / entry.path
        try:
            intact = stat.S_ISREG(os.lstat(path).st_mode) and sha256_file(path) == entry.sha256
        except OSError:
            intact = False
        if not intact:
            raise DatasetIntegrityError(
                f"dataset {dataset.name} {dataset.version} ({dataset.id}): {path} in the SDK's "
                "cached copy is missing or does not match the sha256 recorded at publishing; "
                f"refused: delete {folder} to have it fetched again"
            )


__all__ = ["ClearMLDatasetStore", "MANIFEST_NAME", "OUTPUT_URI_ENV", "configured_output_uri"]

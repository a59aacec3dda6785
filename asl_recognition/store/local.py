"""A local content-addressed dataset store mirroring ClearML Datasets' ids, versions, parents.

Layout under ``<workspace>/datasets``: ``objects/<sha[:2]>/<sha>`` holds each distinct file once,
``versions/<id>.json`` the version records, ``checkouts/<id>/`` a hard-linked read-only tree.
Records name files by hash only, so the store moves with its workspace. A version is numbered
under one OS file lock (``<root>/.lock``): two writers never share a version number, and two that
publish the same inputs (the same ``fingerprint:`` tag) at once get one version, not two.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asl_recognition.locks import exclusive
from asl_recognition.store.base import (
    DatasetNotFoundError,
    DatasetStore,
    DatasetVersion,
    FileEntry,
    atomic_output,
    atomic_write_text,
    remove_stale,
    sha256_file,
)

DATASET_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, like ClearML's dataset ids
FINGERPRINT_PREFIX = "fingerprint:"


def _next_version(existing: list[DatasetVersion]) -> str:
    """ClearML's scheme: 1.0.0, then bump the last number."""
    if not existing:
        return "1.0.0"
    major, minor, patch = (int(x) for x in existing[-1].version.split("."))
    return f"{major}.{minor}.{patch + 1}"


class LocalDatasetStore(DatasetStore):
    backend = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.versions = self.root / "versions"
        self.checkouts = self.root / "checkouts"
        self.lock = self.root / ".lock"
        for folder in (self.objects, self.versions, self.checkouts):
            folder.mkdir(parents=True, exist_ok=True)
        self.remove_stale()

    def remove_stale(self) -> list[Path]:
        """Temp files and checkouts a killed writer left (its pid is dead); live ones stay."""
        leftovers = [
            *self.objects.glob("*/*.tmp*"),
            *self.versions.glob(".*.tmp*"),
            *self.checkouts.glob(".*.tmp*"),
        ]
        return remove_stale(leftovers, ".tmp")

    def _object_path(self, sha: str) -> Path:
        return self.objects / sha[:2] / sha

    def _put(self, source: Path) -> FileEntry:
        sha = sha256_file(source)
        target = self._object_path(sha)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(target, mode=0o444) as tmp:
                shutil.copyfile(source, tmp)
        return FileEntry(path="", sha256=sha, size=target.stat().st_size)

    def create(
        self,
        name: str,
        files: Mapping[str, str | Path],
        parents: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        description: str = "",
    ) -> DatasetVersion:
        for parent_id in parents:
            self.get(dataset_id=parent_id)  # refuses a dangling parent before writing anything
        entries = []
        for rel in sorted(files):
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise ValueError(f"dataset path escapes the dataset root: {rel!r}")
            stored = self._put(Path(files[rel]))
            entries.append(FileEntry(path=rel, sha256=stored.sha256, size=stored.size))
        with exclusive(self.lock):
            same = self._same_inputs(name, tags)
            if same is not None:
                return same
            record = DatasetVersion(
                id=uuid.uuid4().hex,
                name=name,
                version=_next_version(self.list_versions(name)),
                parents=list(parents),
                files=entries,
                metadata={"description": description, **dict(metadata or {})},
                tags=list(tags),
                created=datetime.now(timezone.utc).isoformat(),
                backend=self.backend,
            )
            atomic_write_text(
                self.versions / f"{record.id}.json", json.dumps(record.to_dict(), indent=1)
            )
        return record

    def _same_inputs(self, name: str, tags: Sequence[str]) -> DatasetVersion | None:
        """A version of ``name`` another writer published from the same inputs (its
        ``fingerprint:`` tag) since this one looked: reused, never published twice."""
        prints = [t for t in tags if t.startswith(FINGERPRINT_PREFIX)]
        return self.find(name, prints) if prints else None

    def _all(self) -> list[DatasetVersion]:
        records = [
            DatasetVersion.from_dict(json.loads(p.read_text()))
            for p in self.versions.glob("*.json")
        ]
        return sorted(records, key=lambda r: r.created)

    def list_versions(self, name: str) -> list[DatasetVersion]:
        return [r for r in self._all() if r.name == name]

    def get(
        self,
        name: str | None = None,
        version: str | None = None,
        dataset_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> DatasetVersion:
        if dataset_id:
            if not DATASET_ID.fullmatch(dataset_id):  # never a path: ``../../x`` is no id
                raise DatasetNotFoundError(f"{dataset_id[:80]!r} is not a dataset id")
            path = self.versions / f"{dataset_id}.json"
            if not path.is_file():
                raise DatasetNotFoundError(f"no dataset with id {dataset_id} in {self.root}")
            return DatasetVersion.from_dict(json.loads(path.read_text()))
        if not name:
            raise ValueError("give a dataset id or a name")
        matches = [
            r
            for r in self.list_versions(name)
            if (version in (None, "", "latest") or r.version == version)
            and set(tags) <= set(r.tags)
        ]
        if not matches:
            wanted = f"{name} version {version or 'latest'}" + (
                f" tags {list(tags)}" if tags else ""
            )
            raise DatasetNotFoundError(f"no dataset {wanted} in {self.root}")
        return matches[-1]

    def local_file(self, dataset: DatasetVersion, path: str) -> Path:
        """The stored object itself (read it, never write it): no checkout of the version."""
        return self._object_path(self._entry(dataset, path).sha256)

    def local_copy(self, dataset: DatasetVersion) -> Path:
        target = self.checkouts / dataset.id
        if (target / ".complete").exists():
            return target
        tmp = self.checkouts / f".{dataset.id}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for entry in dataset.files:
            dest = tmp / entry.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self._object_path(entry.sha256), dest)
            except OSError:
                shutil.copyfile(self._object_path(entry.sha256), dest)
        (tmp / ".complete").parent.mkdir(parents=True, exist_ok=True)
        (tmp / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        return target

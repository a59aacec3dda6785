"""The dataset-store contract every stage codes against."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


class DatasetNotFoundError(LookupError):
    """No dataset version matches the name / version / id asked for."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, POSIX separators
    sha256: str
    size: int


@dataclass
class DatasetVersion:
    """One immutable version of a named dataset (``ASL_raw`` or ``ASL``)."""

    id: str
    name: str
    version: str
    parents: list[str]
    files: list[FileEntry]
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    created: str = ""
    backend: str = "local"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DatasetVersion":
        data = dict(data)
        data["files"] = [FileEntry(**f) for f in data.get("files", [])]
        return cls(**data)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def collect_files(source_dir: str | Path) -> dict[str, Path]:
    """Every regular file under ``source_dir`` keyed by its relative POSIX path (links skipped)."""
    root = Path(source_dir)
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


class DatasetStore(ABC):
    """Read and write dataset versions; ClearML Datasets with a server, a local CAS without."""

    backend = "abstract"

    @abstractmethod
    def create(
        self,
        name: str,
        files: Mapping[str, str | Path],
        parents: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        description: str = "",
    ) -> DatasetVersion:
        """Publish a new finalized version holding exactly ``files`` (relative path -> source)."""

    @abstractmethod
    def get(
        self,
        name: str | None = None,
        version: str | None = None,
        dataset_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> DatasetVersion:
        """By id, or by name and version (``None``/``"latest"`` = newest), optionally by tags."""

    @abstractmethod
    def list_versions(self, name: str) -> list[DatasetVersion]:
        """All versions of ``name``, oldest first."""

    @abstractmethod
    def local_copy(self, dataset: DatasetVersion) -> Path:
        """A read-only folder holding the version's files at their relative paths."""

    def find(self, name: str, tags: Sequence[str]) -> DatasetVersion | None:
        """The newest version of ``name`` carrying all ``tags`` (used to reuse unchanged work)."""
        try:
            return self.get(name=name, tags=tags)
        except DatasetNotFoundError:
            return None

    def resolve(self, name: str, ref: str | None) -> DatasetVersion:
        """``ref`` is an id, a version string, or ``latest``/None."""
        if ref in (None, "", "latest"):
            return self.get(name=name)
        try:
            return self.get(dataset_id=ref)
        except DatasetNotFoundError:
            return self.get(name=name, version=ref)

    def lineage(self, dataset: DatasetVersion) -> list[DatasetVersion]:
        """The version and all its ancestors, breadth first."""
        seen: dict[str, DatasetVersion] = {dataset.id: dataset}
        queue = [dataset]
        while queue:
            current = queue.pop(0)
            for parent_id in current.parents:
                if parent_id not in seen:
                    seen[parent_id] = self.get(dataset_id=parent_id)
                    queue.append(seen[parent_id])
        return list(seen.values())

"""The dataset-store contract every stage codes against."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asl_recognition.locks import pid_alive

MANIFEST_NAME = "manifest.json"
# The ASL manifest's layout; readers refuse another in one line (no fallbacks for old ones).
MANIFEST_FORMAT = 3


class ManifestFormatError(ValueError):
    """An ASL version whose manifest this project no longer reads: it must be published again."""


def check_manifest_format(manifest: dict[str, Any], where: str) -> None:
    """Refuse, in one line, a manifest of another layout (no fallbacks read old ones)."""
    found = manifest.get("format", "none")
    if found != MANIFEST_FORMAT:
        raise ManifestFormatError(
            f"{where} has manifest format {found}, not {MANIFEST_FORMAT}: it was published by an "
            "older version of this project; publish it again (tasks/publish_dataset.py)"
        )


class DatasetNotFoundError(LookupError):
    """No dataset version matches the name / version / id asked for."""


class DatasetIntegrityError(DatasetNotFoundError, ValueError):
    """A stored file no longer has the sha256 its version recorded, or a checkout holds files
    its version does not list: refused, so that altered data is never used as the version."""


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
    # Not stored: ``create`` handing back a version another writer published from the same
    # inputs meanwhile (two identical runs at once had both reported reused=False).
    reused: bool = field(default=False, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["reused"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DatasetVersion":
        data = {k: v for k, v in data.items() if k != "reused"}
        data["files"] = [FileEntry(**f) for f in data.get("files", [])]
        return cls(**data)


SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def path_problem(rel: Any) -> str | None:
    """Why ``rel`` cannot name a file inside a dataset (absolute, ``..``, empty parts), or
    None: a version's files are written under its checkout by these names."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        return f"{rel[:120]!r} is no file name" if isinstance(rel, str) else f"{rel!r} is no name"
    if rel.startswith("/") or any(p in ("", ".", "..") for p in rel.split("/")):
        return f"dataset path escapes the dataset root: {rel[:120]!r}"
    return None


RECORD_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, the record's file name
VERSION_NUMBER = re.compile(r"\d+\.\d+\.\d+")


def _field_problem(version: DatasetVersion, stem: str) -> str | None:
    """Why the record's own fields are unusable, or None: its id names the checkout folder
    (an edited ``../`` id had a checkout build delete a folder outside the store), and a wrong
    type in any field was a traceback for every lookup by name."""
    if not isinstance(version.id, str) or version.id != stem or not RECORD_ID.fullmatch(stem):
        return f"its id {str(version.id)[:80]!r} is not its file name's 32 hex digits"
    if not isinstance(version.version, str) or not VERSION_NUMBER.fullmatch(version.version):
        return f"its version {str(version.version)[:40]!r} is not N.N.N"
    kinds = {"name": str, "created": str, "metadata": dict, "tags": list, "parents": list}
    wrong = [k for k, kind in kinds.items() if not isinstance(getattr(version, k), kind)]
    if wrong:
        return f"its {wrong[0]} is not a JSON {kinds[wrong[0]].__name__}"
    if not all(isinstance(p, str) and RECORD_ID.fullmatch(p) for p in version.parents):
        return "a parent is not a dataset id"
    return None


def read_version(path: Path) -> DatasetVersion:
    """A stored version record, checked before any of its names reaches a path: an edited
    record had written (and overwritten) files outside the store through ``../`` names, and a
    malformed one was a traceback or a bare JSON error naming no file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"it holds a JSON {type(data).__name__}, not an object")
        version = DatasetVersion.from_dict(data)
        problems = [_field_problem(version, path.stem)]
        problems += [path_problem(e.path) for e in version.files]
        problems += [
            f"{e.path[:120]!r} has no sha256" for e in version.files
            if not (isinstance(e.sha256, str) and SHA256_HEX.fullmatch(e.sha256))
        ]  # fmt: skip
        names = [e.path for e in version.files]
        if len(set(names)) != len(names):
            problems.append("a file is listed twice")
        problem = next((p for p in problems if p), None)
        if problem:
            raise ValueError(problem)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DatasetIntegrityError(
            f"dataset record {path} is not a readable version record ({exc}); refused"
        ) from None
    return version


# A leftover of a writer in another pid namespace (a container sharing the workspace) cannot be
# judged by its pid here, where a live writer's pid may name no process: removed once this old.
FOREIGN_LEFTOVER_S = 24 * 3600
_WRITER = re.compile(r"(\d+)(?:n(\d+))?(?:_|$)")


def pid_namespace() -> int | None:
    """This process's pid namespace (its inode), where the system has them."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def writer_tag() -> str:
    """This process as a temp name carries it: ``<pid>n<pid namespace>`` (``<pid>`` alone
    where there are no namespaces), so that a cleaner in another namespace leaves it alone."""
    namespace = pid_namespace()
    return f"{os.getpid()}n{namespace}" if namespace else str(os.getpid())


def _writer_after(name: str, marker: str) -> tuple[int, int | None] | None:
    """(pid, namespace or None) written right after ``marker``, ending the name or before ``_``."""
    _, sep, tail = name.rpartition(marker)
    match = _WRITER.match(tail) if sep else None
    if not match:
        return None
    return int(match[1]), int(match[2]) if match[2] else None


def _writer_gone(path: Path, pid: int, namespace: int | None) -> bool:
    """Whether the writer named in ``path`` is dead: by its pid in this namespace, else by age."""
    if namespace is not None and namespace != pid_namespace():
        try:
            return time.time() - path.lstat().st_mtime > FOREIGN_LEFTOVER_S
        except OSError:
            return False
    return pid != os.getpid() and not pid_alive(pid)


def remove_stale(paths: Iterable[Path], marker: str) -> list[Path]:
    """Delete leftovers named ``...<marker><writer>...`` whose writer is dead (killed mid-write).

    A live writer (this process or another run) is never touched; one of another pid namespace
    is judged by age alone (:data:`FOREIGN_LEFTOVER_S`); returns what was removed.
    """
    removed = []
    for path in paths:
        writer = _writer_after(path.name, marker)
        if writer is None or not _writer_gone(path, *writer):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def check_copied(rel: str, sha: str, expected: Mapping[str, str] | None) -> None:
    """Refuse a file whose copied bytes are not the ones the caller checked: validated, then
    rewritten before publishing, it would be stored (and reused by its fingerprint) unchecked."""
    wanted = (expected or {}).get(rel)
    if wanted and wanted != sha:
        raise DatasetIntegrityError(
            f"{rel} changed after it was checked (sha256 {wanted[:16]} then, {sha[:16]} when "
            "copied); nothing was published: run it again on files that stay put"
        )


def temp_name(path: Path) -> Path:
    """The sibling a writer fills before the rename; its tag lets the next start clean it."""
    return path.with_name(f".{path.name}.tmp{writer_tag()}")


@contextmanager
def atomic_output(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling to fill; it replaces ``path`` only if the block succeeds.

    Readers never see half a file, and a failure leaves nothing but the old ``path``.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` all at once (temp sibling then rename)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


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
        expected: Mapping[str, str] | None = None,
    ) -> DatasetVersion:
        """Publish a new finalized version holding exactly ``files`` (relative path -> source).

        ``expected``: the sha256 the caller checked for some files (validate_raw's scan); a file
        whose bytes differ when copied is refused, with nothing published (:func:`check_copied`).
        """

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

    def _entry(self, dataset: DatasetVersion, path: str) -> FileEntry:
        for entry in dataset.files:
            if entry.path == path:
                return entry
        raise DatasetNotFoundError(f"dataset {dataset.id} ({dataset.name}) has no file {path}")

    def local_file(self, dataset: DatasetVersion, path: str) -> Path:
        """One file of the version (e.g. its manifest) without fetching the others where the
        backend can; here through the whole local copy."""
        self._entry(dataset, path)
        return self.local_copy(dataset) / path

    def find(self, name: str, tags: Sequence[str]) -> DatasetVersion | None:
        """The newest version of ``name`` carrying all ``tags`` (used to reuse unchanged work)."""
        try:
            return self.get(name=name, tags=tags)
        except DatasetNotFoundError:
            return None

    def intact(self, dataset: DatasetVersion) -> bool:
        """Every stored file of ``dataset`` still has its recorded sha256; a backend whose files
        live on a server (ClearML) says yes: its local copies are hashed when opened."""
        return True

    def reusable(self, name: str, tags: Sequence[str]) -> DatasetVersion | None:
        """:meth:`find`, unless a stored file of that version was lost or altered: then None,
        so the step builds it again and its :meth:`create` puts the intact files back (the same
        inputs give the same version). Reusing it had refused every run for good."""
        found = self.find(name, tags)
        if found is not None and not self.intact(found):
            warnings.warn(
                f"dataset {found.name} {found.version} ({found.id}): a stored file was lost or "
                "altered; building it again to repair it",
                stacklevel=2,
            )
            return None
        return found

    def version_for(self, name: str, ref: str | None) -> DatasetVersion:
        """The version of ``name`` that ``ref`` names: an id, a version or ``latest``/None."""
        if ref in (None, "", "latest"):
            return self.get(name=name)
        try:
            found = self.get(dataset_id=ref)
        except DatasetNotFoundError:
            return self.get(name=name, version=ref)
        if found.name != name:  # an ASL id as --raw-version was a TypeError deep in a step
            raise DatasetNotFoundError(f"{ref} is a {found.name} version, not one of {name}")
        return found

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

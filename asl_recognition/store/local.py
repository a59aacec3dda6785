"""A local content-addressed dataset store mirroring ClearML Datasets' ids, versions, parents.

Layout under ``<workspace>/datasets``: ``objects/<sha[:2]>/<sha>`` holds each distinct file once
(copied into ``objects/incoming/`` and hashed in the same read, then renamed into place),
``versions/<id>.json`` the version records, ``checkouts/<id>/`` a hard-linked read-only tree.
Records name files by hash only, so the store moves with its workspace. A version is numbered
under one OS file lock (``<root>/.lock``): two writers never share a version number, and two that
publish the same inputs (the same ``fingerprint:`` tag) at once get one version, not two.

A checkout is built under its own lock (``checkouts/.<id>.lock``) by one process while the others
wait, and a complete one is never deleted, since other processes may be reading it. Hard links
share their bytes with the objects, so root writing through a checkout alters the object itself:
every object is hashed when a checkout is built (and when ``_put`` would reuse it), and the
``.complete`` marker records each file's inode, size, mtime and ctime, so that opening a complete
checkout only stats its files (0.1 s for 9,000; hashing them all takes 0.2-0.5 s) and takes no
lock and writes nothing while they match. Under the lock, a file whose stats changed is hashed
again; one that no longer matches is linked again from its object when that still hashes right,
and refused in one line when the object is altered too, as is a file the version does not list.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asl_recognition.hashing import copy_hashed, sha256_file
from asl_recognition.locks import exclusive
from asl_recognition.store.base import (
    DatasetIntegrityError,
    DatasetNotFoundError,
    DatasetStore,
    DatasetVersion,
    FileEntry,
    atomic_write_text,
    check_copied,
    path_problem,
    read_version,
    remove_stale,
    temp_name,
    writer_tag,
)

DATASET_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, like ClearML's dataset ids
FINGERPRINT_PREFIX = "fingerprint:"
COMPLETE = ".complete"  # written last into a checkout: the stats of its files, as JSON
CHECKOUT_WAIT_S = 1800.0  # how long a reader waits for another process building the checkout


def _stat_key(path: Path) -> list[int] | None:
    """What a write or a replacement changes: inode, size, mtime and ctime (ns); None when gone.

    ctime, which no user can set back, catches a same-size rewrite whose mtime was restored
    (unless it lands in the same timestamp tick as the build: 1-10 ms on kernels before 6.13).
    Linking the same object into another checkout moves it too: that checkout's next open
    hashes those files once, and records their new stats.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _hashes_to(path: Path, sha: str) -> bool:
    """``path`` is a regular file (not a link elsewhere) whose bytes have this sha256."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode) and sha256_file(path) == sha
    except OSError:
        return False


def _link(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError as exc:  # another file system, or too many links: a copy; never over a file
        if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
            raise
        shutil.copyfile(source, dest)


def _files_under(root: Path) -> list[str]:
    """Every entry below ``root`` that is not a folder (links to folders too), POSIX relative."""
    found = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder).relative_to(root)
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        found += [(here / name).as_posix() for name in names + links]
    return found


def _read_stats(checkout: Path) -> dict[str, list[int] | None]:
    """The stats a build recorded in ``.complete``; none for a checkout of an older build."""
    try:
        stats = json.loads((checkout / COMPLETE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return stats if isinstance(stats, dict) else {}


def _write_stats(checkout: Path, stats: dict[str, list[int] | None]) -> None:
    atomic_write_text(checkout / COMPLETE, json.dumps({"files": stats}))


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
        self.incoming = self.objects / "incoming"  # copies being hashed, before their rename
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

    def _put(self, source: Path, rel: str, expected: Mapping[str, str] | None) -> FileEntry:
        """Store ``source`` under the hash of the bytes copied, read once: a file rewritten
        while it is published is never stored under the hash of another state of it, nor
        stored at all when those bytes are not the ones the caller checked."""
        self.incoming.mkdir(exist_ok=True)
        staged = self.incoming / f".put.tmp{writer_tag()}_{uuid.uuid4().hex}"
        try:
            sha, size = copy_hashed(source, staged)
            check_copied(rel, sha, expected)
            target = self._object_path(sha)
            if not _hashes_to(target, sha):  # missing, or altered since: these bytes replace it
                target.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(staged, 0o444)
                os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
        return FileEntry(path="", sha256=sha, size=size)

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
        for parent_id in parents:
            self.get(dataset_id=parent_id)  # refuses a dangling parent before writing anything
        entries = []
        for rel in sorted(files):
            problem = path_problem(rel)
            if problem:
                raise ValueError(problem)
            stored = self._put(Path(files[rel]), rel, expected)
            entries.append(FileEntry(path=rel, sha256=stored.sha256, size=stored.size))
        with exclusive(self.lock):
            same = self._same_inputs(name, tags)
            if same is not None and self._serves(same, entries):
                return replace(same, reused=True)
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

    def _serves(self, same: DatasetVersion, entries: list[FileEntry]) -> bool:
        """``same`` may stand for these files: they are its bytes (just stored, so intact), or
        it is intact. Else the inputs no longer make its bytes (another Pillow encodes the
        resize differently) and its altered objects stay: a new version, never the broken one
        that the step had reported as repaired."""
        return [(e.path, e.sha256) for e in same.files] == [
            (e.path, e.sha256) for e in entries
        ] or self.intact(same)

    def _all(self) -> list[DatasetVersion]:
        records = [read_version(p) for p in self.versions.glob("*.json")]
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
            return read_version(path)
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

    def intact(self, dataset: DatasetVersion) -> bool:
        """Every object the version lists is there with its recorded sha256 (each hashed once)."""
        shas = {entry.sha256 for entry in dataset.files}
        return all(_hashes_to(self._object_path(sha), sha) for sha in shas)

    def local_file(self, dataset: DatasetVersion, path: str) -> Path:
        """The stored object itself (read it, never write it): no checkout of the version.

        Hashed first (one file), so that an altered object is refused here too.
        """
        return self._verified_object(dataset, self._entry(dataset, path), set())

    def local_copy(self, dataset: DatasetVersion) -> Path:
        """The version's checkout, built once under its lock and checked on every open.

        Other processes read a complete checkout while this one opens it, so it is never
        deleted: an altered file is replaced atomically from its intact object, or refused.
        """
        target = self.checkouts / dataset.id
        if (target / COMPLETE).is_file() and self._changes(dataset, target)[:2] == ([], []):
            return target  # as built: no lock, no write, readers never wait for each other
        with exclusive(self.checkouts / f".{dataset.id}.lock", timeout=CHECKOUT_WAIT_S):
            if (target / COMPLETE).is_file():  # again under the lock: another may have built it
                self._check_checkout(dataset, target)
            else:
                self._build_checkout(dataset, target)
        return target

    def _verified_object(
        self, dataset: DatasetVersion, entry: FileEntry, checked: set[str]
    ) -> Path:
        """The object behind ``entry`` once its bytes hash to the sha256 the version recorded."""
        obj = self._object_path(entry.sha256)
        if entry.sha256 not in checked:
            if not _hashes_to(obj, entry.sha256):
                state = "does not match" if obj.exists() else "is missing, so it cannot match"
                raise DatasetIntegrityError(
                    f"dataset {dataset.name} {dataset.version} ({dataset.id}): file {entry.path}: "
                    f"its stored object {obj} {state} the sha256 recorded at publishing "
                    "(altered or corrupted since); refused: run the step that published it "
                    "again, which repairs it"
                )
            checked.add(entry.sha256)
        return obj

    def _build_checkout(self, dataset: DatasetVersion, target: Path) -> None:
        """Link every (hashed) object into a temp tree, record its stats, rename it in place."""
        remove_stale(self.checkouts.glob(f".{dataset.id}.tmp*"), ".tmp")  # a killed builder's
        tmp = self.checkouts / f".{dataset.id}.tmp{writer_tag()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            checked: set[str] = set()
            for entry in dataset.files:
                dest = tmp / entry.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                _link(self._verified_object(dataset, entry, checked), dest)
            tmp.mkdir(parents=True, exist_ok=True)
            _write_stats(tmp, {e.path: _stat_key(tmp / e.path) for e in dataset.files})
            if target.exists():  # no marker: left half-built by an older writer, never read
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _changes(
        self, dataset: DatasetVersion, target: Path
    ) -> tuple[list[str], list[FileEntry], dict[str, list[int] | None]]:
        """Files the version does not list, listed ones whose stats differ from those recorded
        at the build (or are gone), and that record."""
        listed = {e.path for e in dataset.files}
        unlisted = [rel for rel in _files_under(target) if rel not in listed and rel != COMPLETE]
        recorded = _read_stats(target)
        changed = [
            e
            for e in dataset.files
            if recorded.get(e.path) is None or _stat_key(target / e.path) != recorded[e.path]
        ]
        return unlisted, changed, recorded

    def _check_checkout(self, dataset: DatasetVersion, target: Path) -> None:
        """Refuse files the version does not list; hash again those whose stats changed."""
        unlisted, changed, recorded = self._changes(dataset, target)
        stale = remove_stale([target / rel for rel in unlisted], ".tmp")  # a killed process's
        gone = {path.relative_to(target).as_posix() for path in stale}
        unlisted = [rel for rel in unlisted if rel not in gone]
        if unlisted:
            more = f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else ""
            raise DatasetIntegrityError(
                f"dataset {dataset.name} {dataset.version} ({dataset.id}): its checkout {target} "
                f"holds {sorted(unlisted)[0]}{more}, which the version does not list; refused: "
                "delete that checkout to have it built again"
            )
        stats = {e.path: recorded.get(e.path) for e in dataset.files}
        checked: set[str] = set()
        for entry in changed:
            path = target / entry.path
            if _hashes_to(path, entry.sha256):  # touched, not altered
                stats[entry.path] = _stat_key(path)
                continue
            if path.is_dir() and not path.is_symlink():  # a rename cannot replace a folder
                raise DatasetIntegrityError(
                    f"dataset {dataset.name} {dataset.version} ({dataset.id}): its checkout "
                    f"{target} holds a folder where the file {entry.path} belongs; refused: "
                    "delete that checkout to have it built again"
                )
            obj = self._verified_object(dataset, entry, checked)  # refused if altered too
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = temp_name(path)
            staged.unlink(missing_ok=True)
            _link(obj, staged)
            os.replace(staged, path)  # atomic: a reader sees the old file or the intact one
            stats[entry.path] = _stat_key(path)
            warnings.warn(
                f"dataset {dataset.id}: {path} was altered or removed; restored from its "
                f"intact stored object {obj}",
                stacklevel=3,
            )
        if stats != recorded:
            _write_stats(target, stats)

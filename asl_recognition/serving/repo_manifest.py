"""What a build wrote into a Triton model repository, so a file changed since is never served.

Each build records, in ``.asl-manifest.json`` at the repository's root, the sha256 of every
file in the model folders it wrote. :func:`problems` compares the folders with that record: a
changed, missing or added file is named. A server started on such a repository (the launcher,
the live page, the image's entrypoint) refuses to start, and the launcher stops a running one
that sees a change (Triton in poll mode would load it). The next build removes the changed
versions (copies of registry models: nothing is lost) and rewrites configs and labels.

It catches files changed by hand, by a copy gone wrong or by a disk; not someone who rewrites
the record too (it is not signed). Repositories without a record (not built by this project)
are not checked. Stdlib only: the server image's entrypoint and health check (:mod:`.stubs`)
import it with Triton's Python.

CLI::

    python -m asl_recognition.serving.repo_manifest check tritonserver --model-repository=R ...
    python -m asl_recognition.serving.repo_manifest accept R    # a change made on purpose
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from asl_recognition.serving.admin_api import flag_values

MANIFEST_FILE = ".asl-manifest.json"
BUILD_LOCK = ".build.lock"  # held by builds (repo_files.BUILD_LOCK); a guard skips while held
FORMAT = 1
_CHUNK = 1 << 20


class ManifestError(ValueError):
    """The record itself cannot be read: it counts as tampered."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(model_dir: Path) -> list[str]:
    """The files Triton may read in a model folder, relative to it: dot names are skipped
    (staging folders and temporaries, which Triton does not load)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(model_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(model_dir)
        found += [(rel / f).as_posix() for f in filenames if not f.startswith(".")]
    return sorted(found)


def read_manifest(root: Path) -> dict[str, dict[str, str]] | None:
    """``{model folder: {file: sha256}}`` as the last build recorded it; None without one."""
    path = Path(root) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} cannot be read ({exc})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if data.get("format") != FORMAT or not isinstance(models, dict):
        raise ManifestError(f"{path} is not a manifest of format {FORMAT}")
    return models


def record(root: Path, models: Iterable[str]) -> None:
    """Record ``models``' folders as they are now (the caller holds the build lock)."""
    root = Path(root)
    try:
        recorded = read_manifest(root) or {}
    except ManifestError:
        recorded = {}
    recorded = {m: files for m, files in recorded.items() if (root / m).is_dir()}
    for model in models:
        recorded[model] = {f: _sha256(root / model / f) for f in model_files(root / model)}
    text = json.dumps({"format": FORMAT, "models": recorded}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f"{MANIFEST_FILE}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, root / MANIFEST_FILE)


def changed_files(root: Path, model: str, files: dict[str, str]) -> list[str]:
    """``model/file`` for each file of the folder that differs from ``files``: changed,
    missing or added."""
    on_disk = set(model_files(root / model)) if (root / model).is_dir() else set()
    changed = [
        name
        for name in sorted(on_disk | set(files))
        if name not in files or name not in on_disk or _sha256(root / model / name) != files[name]
    ]
    return [f"{model}/{name}" for name in changed]


def problems(root: Path) -> list[str]:
    """Every file of the recorded model folders that differs from the record (none without a
    record). An unreadable record is one problem."""
    root = Path(root)
    try:
        recorded = read_manifest(root)
    except ManifestError as exc:
        return [str(exc)]
    found: list[str] = []
    for model, files in sorted((recorded or {}).items()):
        found += changed_files(root, model, files)
    return found


def describe(root: Path, found: list[str]) -> str:
    """One line for a refusal: what changed, and how to get a trusted repository back."""
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return (
        f"the model repository {root} changed since its last build ({shown}; record "
        f"{MANIFEST_FILE}); it is not served: build it again (make serve, or "
        "tasks/build_triton_repo.py), restore the files, or if the change is yours record it: "
        f"python -m asl_recognition.serving.repo_manifest accept {root}"
    )


@contextlib.contextmanager
def no_build_running(root: Path) -> Iterator[bool]:
    """Whether no build holds the repository's lock; a shared flock on a read-only descriptor,
    held for the block, so a check never reads half a build (and works on a read-only mount)."""
    try:
        fd = os.open(Path(root) / BUILD_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # no build ever ran here
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def problems_unless_building(root: Path) -> list[str]:
    """:func:`problems`, or none while a build is writing (it records at its end; the next
    look sees the record)."""
    with no_build_running(root) as idle:
        return problems(root) if idle else []


class RepositoryGuard:
    """Checks a served repository at most every ``interval`` s: a stat of each file, a hash
    only of files whose inode, size, mtime or ctime moved (ctime cannot be set back)."""

    def __init__(self, root: Path, interval: float = 0.25) -> None:
        self.root, self.interval = Path(root), interval
        self._checked = 0.0
        self._stats: dict[str, tuple[int, ...]] | None = None
        self.problem: str | None = None

    def _fingerprint(self) -> dict[str, tuple[int, ...]]:
        stats = {}
        for name in sorted(p.name for p in self.root.iterdir()):  # the record is one of them
            path = self.root / name
            files = model_files(path) if path.is_dir() else [""] if path.is_file() else []
            for f in files:
                st = os.stat(path / f if f else path)
                stats[f"{name}/{f}"] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return stats

    def changed(self) -> str | None:
        """The refusal line once the repository differs from its record, else None."""
        if self.problem is None and time.monotonic() - self._checked >= self.interval:
            self._checked = time.monotonic()
            with no_build_running(self.root) as idle:
                if idle:
                    self._check()
        return self.problem

    def _check(self) -> None:
        try:
            stats = self._fingerprint()
        except OSError:  # a file removed between listing and stat: look again next time
            return
        if stats == self._stats:
            return
        found = problems(self.root)
        if found:
            self.problem = describe(self.root, found)
        else:
            self._stats = stats


def accept(root: Path) -> list[str]:
    """Record every model folder as it is now, for a change made on purpose (a hand-tuned
    config); holds the build lock, so no build is half-recorded. Returns the folders."""
    from asl_recognition.locks import exclusive  # stdlib only, like this module

    root = Path(root).resolve()
    models = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    with exclusive(root / BUILD_LOCK):
        record(root, models)
    return models


def changed_in_command(args: list[str]) -> str | None:
    """Why a tritonserver with these arguments must not serve: a repository it names
    (``--model-repository``, ``--model-store``, as Triton reads them) changed since its record."""
    for repo in flag_values(args, "--model-repository", "--model-store"):
        changed = problems_unless_building(Path(repo))
        if changed:
            return describe(Path(repo), changed)
    return None


def changed_repository(pid: int) -> str | None:
    """:func:`changed_in_command` for the running tritonserver ``pid`` (its command line)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:]
    except OSError:  # it ended meanwhile
        return None
    return changed_in_command([w.decode("utf-8", "replace") for w in words])


USAGE = (
    "usage: python -m asl_recognition.serving.repo_manifest check TRITONSERVER [ARGS...]\n"
    "       python -m asl_recognition.serving.repo_manifest accept REPO"
)


def main(argv: list[str] | None = None) -> int:
    """``check TRITONSERVER ARGS...``: the server image's entrypoint, before tritonserver starts
    (the image's health check is :mod:`.stubs`); ``accept REPO``: record a change made on
    purpose."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["accept"] and len(args) == 2:
        models = accept(Path(args[1]))
        print(f"recorded {len(models)} model folders of {args[1]} as they are now")
        return 0
    if args[:1] == ["check"] and len(args) >= 2:
        why = changed_in_command(args[2:])  # args[1] is tritonserver itself
        if why:
            print(f"repo_manifest: {why}", file=sys.stderr)
        return 1 if why else 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

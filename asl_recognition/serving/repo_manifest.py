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
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from asl_recognition.hashing import sha256_file
from asl_recognition.serving.admin_api import flag_values

MANIFEST_FILE = ".asl-manifest.json"
BUILD_LOCK = ".build.lock"  # held by builds (repository.build_repository); checks skip then
FORMAT = 1


class ManifestError(ValueError):
    """The record itself cannot be read: it counts as tampered."""


def _sha256(path: Path) -> str | None:
    """The sha256 of a regular file, never read through a link; None for anything else (a link,
    a pipe that would block the read, a file that is unreadable or gone)."""
    try:
        return sha256_file(path) if stat.S_ISREG(os.lstat(path).st_mode) else None
    except OSError:
        return None


def model_files(model_dir: Path) -> list[str]:
    """What Triton may read in a model folder, relative to it: files, and folders reached
    through a link (listed, never followed). Dot names are skipped (staging folders and
    temporaries, which Triton does not load)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(model_dir):
        rel = Path(dirpath).relative_to(model_dir)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in links)
        found += [(rel / f).as_posix() for f in filenames + links if not f.startswith(".")]
    return sorted(found)


def model_folders(root: Path) -> list[str]:
    """The model folders at a repository's root: every folder, dot names too (Triton 2.51
    loads ``.x/`` as model ``.x``; builds write no dot-named folder there)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def _read_record(root: Path) -> dict | None:
    """The whole record (``models``, and ``unfinished`` when a build failed); None without one."""
    path = Path(root) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} cannot be read ({exc})") from None
    fields = data if isinstance(data, dict) else {}
    fields.setdefault("unfinished", {})  # records written before builds marked failures
    mappings = all(isinstance(fields.get(key), dict) for key in ("models", "unfinished"))
    if fields.get("format") != FORMAT or not mappings:
        raise ManifestError(f"{path} is not a manifest of format {FORMAT}")
    return fields


def read_manifest(root: Path) -> dict[str, dict[str, str]] | None:
    """``{model folder: {file: sha256}}`` as the last build recorded it; None without one."""
    data = _read_record(root)
    return None if data is None else data["models"]


def record(root: Path, models: Iterable[str], fresh: bool = False, unfinished: str = "") -> None:
    """Record ``models``' folders as they are now, keeping the other folders' records unless
    ``fresh`` (the caller holds the build lock; an unreadable record raises
    :class:`ManifestError`). ``unfinished``: why the build that wrote them failed part-way; they
    are refused (:func:`problems`) until a build records them again without it."""
    root = Path(root)
    data = {} if fresh else _read_record(root) or {}
    recorded = {m: f for m, f in data.get("models", {}).items() if (root / m).is_dir()}
    failed = {m: why for m, why in data.get("unfinished", {}).items() if m in recorded}
    for model in models:
        recorded[model] = {f: _sha256(root / model / f) for f in model_files(root / model)}
        failed.pop(model, None)
        if unfinished:
            failed[model] = unfinished
    payload = {"format": FORMAT, "models": recorded, "unfinished": failed}
    text = json.dumps(payload, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f"{MANIFEST_FILE}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, root / MANIFEST_FILE)


def changed_files(root: Path, model: str, files: dict[str, str]) -> list[str]:
    """``model/file`` for each file of the folder that differs from ``files``: changed, added,
    or missing from a version that is still there. A version folder removed whole (a rollback)
    or a model folder removed whole serves nothing wrong."""
    model_dir = root / model
    if not model_dir.is_dir():
        return []
    kept = {n: h for n, h in files.items() if "/" not in n or (model_dir / n).parent.exists()}
    return [
        f"{model}/{name}"
        for name in sorted(set(model_files(model_dir)) | set(kept))
        if kept.get(name) is None or _sha256(model_dir / name) != kept[name]
    ]


def problems(root: Path) -> list[str]:
    """Every file of the recorded model folders that differs from the record, every model
    folder the record does not list, and every folder a failed build left unfinished (none
    without a record; an unreadable one is a problem)."""
    root = Path(root)
    try:
        data = _read_record(root)
        if data is None:
            return []
        folders = model_folders(root)
    except (ManifestError, OSError) as exc:
        return [str(exc)]
    recorded = data["models"]
    found = [
        f"{name}/ (its last build did not finish: {why})"
        for name, why in sorted(data["unfinished"].items())
    ]
    found += [f"{name}/ (not in the record)" for name in folders if name not in recorded]
    for model, files in sorted(recorded.items()):
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
    except OSError:  # no build ever ran here, or its lock is not ours to read: check anyway
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


def trusted(root: Path) -> bool:
    """Whether a repository may be served again after a refusal: its record is there, no build
    is writing, and nothing differs from the record."""
    with no_build_running(root) as idle:
        return idle and (Path(root) / MANIFEST_FILE).is_file() and not problems(root)


class RepositoryGuard:
    """Checks a served repository at most every ``interval`` s: a stat of each entry (links not
    followed), a hash only once an inode, size, mtime or ctime moved (ctime cannot be set
    back). A record there at the start that goes away is a change too."""

    def __init__(self, root: Path, interval: float = 0.25) -> None:
        self.root, self.interval = Path(root), interval
        self._checked = 0.0
        self._stats: dict[str, tuple[int, ...]] | None = None
        self._had_record = (self.root / MANIFEST_FILE).is_file()
        self.problem: str | None = None

    def _fingerprint(self) -> dict[str, tuple[int, ...]] | None:
        """None when an entry vanished between listing and stat: a full check decides."""
        stats = {}
        try:
            for name in sorted(p.name for p in self.root.iterdir()):  # the record among them
                path = self.root / name
                for f in model_files(path) if path.is_dir() else [""]:
                    st = os.lstat(path / f if f else path)
                    stats[f"{name}/{f}"] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            return None
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
        stats = self._fingerprint()
        if stats is not None and stats == self._stats:
            return
        found = problems(self.root)
        if self._had_record and not (self.root / MANIFEST_FILE).is_file():
            found.insert(0, f"{MANIFEST_FILE} (removed)")
        if found:
            self.problem = describe(self.root, found)
        else:
            self._stats = stats


def accept(root: Path) -> list[str]:
    """Record every model folder as it is now, for a change made on purpose (a hand-tuned
    config); holds the build lock, so no build is half-recorded. Returns the folders."""
    from asl_recognition.locks import exclusive  # stdlib only, like this module

    root = Path(root).resolve()
    models = model_folders(root)
    with exclusive(root / BUILD_LOCK):
        record(root, models, fresh=True)
    return models


def changed_in_command(args: list[str], cwd: str = ".") -> str | None:
    """Why a tritonserver with these arguments must not serve: a repository it names
    (``--model-repository``, ``--model-store``, as Triton reads them) changed since its record."""
    for repo in flag_values(args, "--model-repository", "--model-store"):
        changed = problems_unless_building(Path(cwd, repo))
        if changed:
            return describe(Path(cwd, repo), changed)
    return None


def changed_repository(pid: int) -> str | None:
    """:func:`changed_in_command` for the running tritonserver ``pid`` (its command line, a
    relative repository read from its working folder)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:]
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:  # it ended meanwhile
        return None
    return changed_in_command([w.decode("utf-8", "replace") for w in words], cwd)


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
        try:
            models = accept(Path(args[1]))
        except (OSError, ValueError) as exc:  # a missing or read-only folder, a lock held
            print(f"repo_manifest: {args[1]}: {exc}", file=sys.stderr)
            return 1
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

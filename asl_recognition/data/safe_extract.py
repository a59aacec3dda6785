"""Zip extraction that cannot write outside its target, fill the disk, or leave half a tree.

Refused: zip-slip and absolute paths, empty names, a file named ``.``, names or components
longer than the file system allows, links, encrypted or corrupt archives, a name that is both a
file and a folder, duplicate names, and archives over the size limits (zip bombs). The limits are
checked from the central directory first and enforced again on the bytes actually decompressed,
so a member whose header lies about its size is caught while streaming. Extraction goes to a
staging folder next to the target that is renamed into place only when every member is written;
any OS error while writing (a name the file system refuses, a full disk) refuses the archive too.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from asl_recognition.store.base import remove_stale, writer_tag

MiB = 1 << 20
CHUNK = MiB
# Below this uncompressed size a member's ratio is not checked: a 1 MiB member cannot fill a disk
# however well it compresses (an all-black frame or a text file can exceed any sane ratio).
RATIO_FLOOR = MiB
# ... but such members add up to at most this: a thousand members of zeros just under the floor
# passed every check, and a zip of 1.2 MB wrote (and published) 1 GiB.
DENSE_BYTES = 64 * MiB


LIMIT_VARS = {
    "member_bytes": "ASL_ZIP_MAX_MEMBER_BYTES",
    "total_bytes": "ASL_ZIP_MAX_TOTAL_BYTES",
    "members": "ASL_ZIP_MAX_MEMBERS",
    "ratio": "ASL_ZIP_MAX_RATIO",
}


class UnsafeArchiveError(ValueError):
    """A zip that cannot be extracted safely; nothing of it is left behind."""


@dataclass(frozen=True)
class ZipLimits:
    """Bounds for one archive, sized for image datasets (a phone photo is under 20 MB)."""

    member_bytes: int = 64 * MiB
    total_bytes: int = 8 * 1024 * MiB
    members: int = 500_000
    ratio: float = 200.0

    @classmethod
    def from_env(cls) -> "ZipLimits":
        """Defaults, each overridable by its ``ASL_ZIP_MAX_*`` variable (tests lower them)."""
        values: dict[str, float | int] = {}
        for field_name, var in LIMIT_VARS.items():
            text = os.environ.get(var, "").strip()
            if not text:
                continue
            kind = float if field_name == "ratio" else int
            try:
                value = kind(text)
            except ValueError:
                raise ValueError(f"{var}={text!r} is not a number") from None
            if not value > 0:
                raise ValueError(f"{var}={text!r} must be positive")
            values[field_name] = value
        return cls(**values)


# Fallbacks where os.pathconf cannot tell (the usual Linux NAME_MAX and PATH_MAX, in bytes).
NAME_MAX = 255
PATH_MAX = 4096


def _fs_limit(folder: Path, key: str, fallback: int) -> int:
    """The file system's limit for ``folder`` (its nearest existing parent), else ``fallback``."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, key))
    except (OSError, ValueError):
        return fallback


def _shown(name: str, keep: int = 60) -> str:
    """``name`` for a one-line message: quoted, cut short when it is long."""
    return repr(name) if len(name) <= keep else f"{name[:keep]!r}..."


def _name_problem(name: str, target: Path) -> str | None:
    """An empty name, a file named ``.``, a ``..`` component, or a name the file system cannot
    hold. ``./A/x.jpg`` is ``A/x.jpg`` (some tools write it so; the duplicate check sees them as
    one name) and a ``./`` entry is the target folder itself.

    Caught here so the refusal is one line before anything is written, not an OS error (or a
    write to the staging folder itself, for ``.``) half way through.
    """
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts:
        if not name:
            return "member '' has an empty name"
        return None if name.endswith("/") else f"member {name!r} names the target folder itself"
    if ".." in parts:
        return f"member {_shown(name)} escapes the target with '..'"
    name_max = _fs_limit(target, "PC_NAME_MAX", NAME_MAX)
    longest = max(parts, key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(longest)) > name_max:
        return (
            f"member {_shown(name)} has a {len(os.fsencode(longest))} byte name component, over "
            f"the file system's {name_max} byte limit"
        )
    path_max = _fs_limit(target, "PC_PATH_MAX", PATH_MAX)
    if len(os.fsencode(str(target / "/".join(parts)))) >= path_max:
        return f"member {_shown(name)} makes a path over the file system's {path_max} byte limit"
    return None


def _member_problem(info: zipfile.ZipInfo, target: Path) -> str | None:
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return f"member {info.filename!r} is a symbolic link"
    if (
        name.startswith("/")
        or PurePosixPath(name).is_absolute()
        or (len(name) > 1 and name[1] == ":")
    ):
        return f"member {info.filename!r} has an absolute path"
    problem = _name_problem(name, target)
    if problem:
        return problem
    resolved = (target / name).resolve()
    if resolved != target and target not in resolved.parents:
        return f"member {info.filename!r} resolves outside {target}"
    if info.flag_bits & 0x1:
        return f"member {info.filename!r} is encrypted"
    return None


def _size_problem(info: zipfile.ZipInfo, limits: ZipLimits) -> str | None:
    if info.file_size > limits.member_bytes:
        return (
            f"member {info.filename!r} declares {info.file_size} bytes, over the "
            f"{limits.member_bytes} byte member limit (ASL_ZIP_MAX_MEMBER_BYTES)"
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size >= RATIO_FLOOR and ratio > limits.ratio:
        return (
            f"member {info.filename!r} compresses {ratio:.0f}:1, over the {limits.ratio:g}:1 "
            "limit (ASL_ZIP_MAX_RATIO): a zip bomb, not photographs"
        )
    return None


def _layout_problem(members: list[zipfile.ZipInfo]) -> str | None:
    """Duplicate names, and a name that is a file in one member and a folder in another."""
    files: set[str] = set()
    dirs: set[str] = set()
    for info in members:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        dirs.update("/".join(parts[:k]) for k in range(1, len(parts)))
        if info.is_dir():
            dirs.add("/".join(parts))
        elif "/".join(parts) in files:
            return f"member {info.filename!r} appears twice"
        else:
            files.add("/".join(parts))
    clash = sorted(files & dirs)
    if clash:
        return f"{clash[0]!r} is both a file and a folder"
    return None


def check_archive(zf: zipfile.ZipFile, target: Path, limits: ZipLimits) -> None:
    """Refuse the archive from its central directory alone, before any byte is written."""
    members = zf.infolist()
    if len(members) > limits.members:
        raise UnsafeArchiveError(
            f"{len(members)} members, over the {limits.members} limit (ASL_ZIP_MAX_MEMBERS)"
        )
    total = dense = 0
    for info in members:
        problem = _member_problem(info, target) or _size_problem(info, limits)
        if problem:
            raise UnsafeArchiveError(problem)
        total += info.file_size
        if info.file_size / max(info.compress_size, 1) > limits.ratio:
            dense += info.file_size
    if dense > DENSE_BYTES:
        raise UnsafeArchiveError(
            f"members that compress over {limits.ratio:g}:1 (ASL_ZIP_MAX_RATIO) hold {dense} "
            f"bytes in all, over {DENSE_BYTES}: a zip bomb of small members, not photographs"
        )
    if total > limits.total_bytes:
        raise UnsafeArchiveError(
            f"members declare {total} bytes in all, over the {limits.total_bytes} byte limit "
            "(ASL_ZIP_MAX_TOTAL_BYTES)"
        )
    problem = _layout_problem(members)
    if problem:
        raise UnsafeArchiveError(problem)


def _stream_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: int, limits: ZipLimits
) -> int:
    """Write one member, counting real bytes; returns them. Refuses past any bound."""
    allowed = min(info.file_size, limits.member_bytes, budget)
    written = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(dest, "xb") as out:
        while block := src.read(CHUNK):
            written += len(block)
            if written > allowed:
                raise UnsafeArchiveError(
                    f"member {info.filename!r} decompresses past {allowed} bytes "
                    f"(declared {info.file_size}): its header lies"
                )
            out.write(block)
    return written


def _extract_all(zf: zipfile.ZipFile, stage: Path, limits: ZipLimits) -> None:
    budget = limits.total_bytes
    for info in zf.infolist():
        dest = stage / info.filename.replace("\\", "/")
        try:
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            budget -= _stream_member(zf, info, dest, budget, limits)
        except OSError as exc:
            # a name this file system refuses that the checks above did not foresee, a full disk
            raise UnsafeArchiveError(
                f"cannot write member {_shown(info.filename)} ({exc.strerror or exc})"
            ) from None


def safe_extract_zip(
    archive: str | Path, target: str | Path, limits: ZipLimits | None = None
) -> Path:
    """Extract ``archive`` into ``target`` (absent or empty) or refuse it whole, one line why.

    Raises UnsafeArchiveError; on refusal ``target`` holds nothing from the archive.
    """
    archive = Path(archive)
    limits = limits or ZipLimits.from_env()
    target = Path(target).resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"extraction target {target} exists and is not an empty folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent.glob(f".{glob.escape(target.name)}.part*"), ".part")
    stage = target.parent / f".{target.name}.part{writer_tag()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            check_archive(zf, stage.resolve(), limits)
            stage.mkdir()
            _extract_all(zf, stage, limits)
    except UnsafeArchiveError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise UnsafeArchiveError(f"refusing {archive.name}: {exc}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        shutil.rmtree(stage, ignore_errors=True)
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsafeArchiveError(
            f"refusing {archive.name}: corrupt or unreadable zip ({why})"
        ) from None
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise UnsafeArchiveError(
            f"refusing {archive.name}: cannot extract it ({exc.strerror or exc})"
        ) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if target.exists():
        target.rmdir()
    os.replace(stage, target)
    return target

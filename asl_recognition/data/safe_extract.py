"""Zip extraction that cannot write outside its target (zip-slip, absolute paths, links)."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath


class UnsafeArchiveError(ValueError):
    """A member would escape the target or is a link; nothing is extracted."""


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
    if ".." in PurePosixPath(name).parts:
        return f"member {info.filename!r} escapes the target with '..'"
    resolved = (target / name).resolve()
    if resolved != target and target not in resolved.parents:
        return f"member {info.filename!r} resolves outside {target}"
    return None


def safe_extract_zip(archive: str | Path, target: str | Path) -> Path:
    """Check every member first, then extract; refuse the whole archive on the first bad member.

    Checking before writing means a hostile archive leaves nothing half-extracted behind.
    """
    target = Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            problem = _member_problem(info, target)
            if problem:
                raise UnsafeArchiveError(f"refusing {Path(archive).name}: {problem}")
        for info in members:
            zf.extract(info, target)
    return target

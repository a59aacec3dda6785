"""Workspace fingerprints and one-line-error checks: a refused run must touch nothing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fingerprint(root: Path, skip: tuple[str, ...] = ("clearml_cache",)) -> dict[str, tuple]:
    """Every file under ``root`` (size, mtime, content hash) except under ``skip``.

    Folders are left out: opening the store creates its empty layout, which overwrites nothing.
    """
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] in skip:
            continue
        for name in filenames:
            path = Path(dirpath) / name
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[(rel_dir / name).as_posix()] = (st.st_size, st.st_mtime_ns, digest)
    return out


def _checkout_record(rel: str) -> bool:
    """A checkout's ``.complete`` record or its build lock: an open may rewrite them."""
    return rel.startswith("datasets/checkouts/") and (
        rel.endswith("/.complete") or rel.endswith(".lock")
    )


def assert_untouched(root: Path, before: dict[str, tuple], also_new: tuple[str, ...] = ()) -> None:
    """Every earlier file is byte-for-byte unchanged (but a checkout's record and lock), and the
    only new files are checkouts.

    Opening a dataset version materialises it under ``datasets/checkouts/`` (a read cache, whose
    ``.complete`` record and lock an open rewrites after another version linked the same
    objects); a refused run must add nothing else: no run folder, no registry record
    (``also_new``: other files the caller expects, such as a failed task's ClearML session
    record).
    """
    after = fingerprint(root)
    cache = "datasets/checkouts/"
    changed = [k for k, v in before.items() if after.get(k) != v and not _checkout_record(k)]
    expected = (cache, *also_new)
    added = [k for k in after if k not in before and not k.startswith(expected)]
    assert changed == [] and added == [], (changed, added)


def assert_one_line(message: str, *fragments: str) -> None:
    assert message.strip() and "\n" not in message.strip(), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)

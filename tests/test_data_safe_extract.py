"""Zip uploads cannot write outside the extraction folder or smuggle links in."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from asl_recognition.data.raw import validate_raw
from asl_recognition.data.safe_extract import UnsafeArchiveError, safe_extract_zip


def _zip(path: Path, members: list[tuple[str, bytes]], link: tuple[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link[0])
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, link[1])
    return path


@pytest.mark.parametrize(
    "evil, message",
    [
        ("../escaped.jpg", "escapes the target"),
        ("A/../../escaped.jpg", "escapes the target"),
        ("/tmp/asl_absolute_escape.jpg", "absolute path"),
    ],
)
def test_zip_slip_is_refused_and_nothing_written(tmp_path: Path, evil: str, message: str) -> None:
    archive = _zip(tmp_path / "evil.zip", [("A/ok.jpg", b"x"), (evil, b"pwned")])
    target = tmp_path / "deep" / "target"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract_zip(archive, target)
    assert not (tmp_path / "deep" / "escaped.jpg").exists()
    assert not (tmp_path / "escaped.jpg").exists()
    assert not list(target.rglob("*"))  # checked before anything was written


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "link.zip", [("A/ok.jpg", b"x")], link=("A/pw.jpg", "/etc/passwd"))
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract_zip(archive, tmp_path / "target")
    assert not (tmp_path / "target" / "A" / "pw.jpg").exists()


def test_safe_members_extract(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "ok.zip", [("root/A/a.jpg", b"a"), ("root/B/b.jpg", b"b")])
    out = safe_extract_zip(archive, tmp_path / "target")
    assert (out / "root" / "A" / "a.jpg").read_bytes() == b"a"


def test_validate_raw_refuses_a_zip_slip_upload(asl_workspace: Path, tmp_path: Path) -> None:
    archive = _zip(tmp_path / "evil.zip", [("../x.jpg", b"x")])
    with pytest.raises(UnsafeArchiveError, match=r"refusing evil\.zip: member '\.\./x\.jpg'"):
        validate_raw(archive, report_dir=tmp_path / "rep", progress=False)

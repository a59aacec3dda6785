"""Zip uploads cannot write outside the extraction folder or smuggle links in."""

from __future__ import annotations

import errno
import shutil
import stat
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest
from asl_testkit.cli import run_script

from asl_recognition.data import safe_extract
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


# --- zip bombs, lying headers, corrupt / encrypted archives, file-folder clashes ---------------

MiB = 1 << 20


def _real_members(sample_dir: Path, n: int = 3) -> list[tuple[str, bytes]]:
    frames = sorted((sample_dir / "A").glob("*.jpg"))[:n]
    return [(f"A/{p.name}", p.read_bytes()) for p in frames]


def _deflated(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _patch_sizes(archive: Path, member: str, declared: int) -> None:
    """Rewrite a member's uncompressed size in its local and central headers (a lying zip)."""
    blob = bytearray(archive.read_bytes())
    name = member.encode()
    for sig, offset, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        start = 0
        while (start := blob.find(sig, start)) >= 0:
            name_len = struct.unpack_from("<H", blob, start + name_at - 4)[0]
            if sig == b"PK\x01\x02":
                name_len = struct.unpack_from("<H", blob, start + 28)[0]
            if blob[start + name_at : start + name_at + name_len] == name:
                struct.pack_into("<I", blob, start + offset, declared)
            start += 4
    archive.write_bytes(bytes(blob))


def _assert_nothing_left(parent: Path, target: Path) -> None:
    assert not target.exists() or not any(target.iterdir())
    assert [p.name for p in parent.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def limits_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("MEMBER_BYTES", "TOTAL_BYTES", "MEMBERS", "RATIO"):
        monkeypatch.delenv(f"ASL_ZIP_MAX_{var}", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ASL_ZIP_MAX_MEMBER_BYTES": str(MiB)}, "over the 1048576 byte member limit"),
        ({"ASL_ZIP_MAX_RATIO": "200"}, r"compresses \d+:1, over the 200:1 limit"),
        (
            {"ASL_ZIP_MAX_TOTAL_BYTES": str(2 * MiB), "ASL_ZIP_MAX_RATIO": "1e6"},
            "over the 2097152 byte limit",
        ),
        ({"ASL_ZIP_MAX_MEMBERS": "3"}, "4 members, over the 3 limit"),
    ],
)
def test_zip_bomb_is_refused_from_the_central_directory(
    tmp_path: Path, sample_dir: Path, limits_env, env: dict, message: str
) -> None:
    for var, value in env.items():
        limits_env.setenv(var, value)
    # three real frames and 3 MiB of zeros that deflate to a few KB
    archive = _deflated(
        tmp_path / "bomb.zip", _real_members(sample_dir) + [("A/zeros.bmp", bytes(3 * MiB))]
    )
    assert archive.stat().st_size < 100_000
    target = tmp_path / "out" / "target"
    with pytest.raises(UnsafeArchiveError, match=f"refusing bomb.zip: .*{message}"):
        safe_extract_zip(archive, target)
    _assert_nothing_left(target.parent, target)


def test_many_small_members_of_zeros_are_a_zip_bomb_too(
    tmp_path: Path, sample_dir: Path, limits_env
) -> None:
    """Members just under the per-member ratio floor, at the default limits: 80 of them passed
    every member check, and 300 KB of zip wrote (and published) 80 MiB of zeros; 20 real
    frames among them dilute any whole-archive ratio."""
    zeros = [(f"A/pad{i:03d}.bin", bytes(safe_extract.RATIO_FLOOR - 1)) for i in range(80)]
    archive = _deflated(tmp_path / "many.zip", _real_members(sample_dir, 20) + zeros)
    assert archive.stat().st_size < 400_000
    target = tmp_path / "out" / "target"
    with pytest.raises(
        UnsafeArchiveError, match=r"compress over 200:1 .* hold 83886000 bytes in all"
    ):
        safe_extract_zip(archive, target)
    _assert_nothing_left(target.parent, target)
    frames = _deflated(tmp_path / "frames.zip", _real_members(sample_dir, 20))
    assert len(list(safe_extract_zip(frames, tmp_path / "ok").rglob("*.jpg"))) == 20


def test_a_declared_3_gib_member_is_refused_without_reading_it(
    tmp_path: Path, sample_dir: Path, limits_env
) -> None:
    members = _real_members(sample_dir)
    archive = _deflated(tmp_path / "big.zip", members)
    _patch_sizes(archive, members[1][0], 3 << 30)
    with pytest.raises(UnsafeArchiveError, match="declares 3221225472 bytes, over the 67108864"):
        safe_extract_zip(archive, tmp_path / "target")
    _assert_nothing_left(tmp_path, tmp_path / "target")


def test_a_member_lying_about_its_size_is_caught_while_streaming(
    tmp_path: Path, sample_dir: Path, limits_env
) -> None:
    # 8 MiB of zeros declared as 1000 bytes: every central-directory check passes
    members = _real_members(sample_dir, 1) + [("A/liar.bmp", bytes(8 * MiB))]
    archive = _deflated(tmp_path / "liar.zip", members + _real_members(sample_dir, 2)[1:])
    _patch_sizes(archive, "A/liar.bmp", 1000)
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("A/liar.bmp").file_size == 1000
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match="refusing liar.zip: "):
        safe_extract_zip(archive, target)
    _assert_nothing_left(tmp_path, target)


def test_a_corrupt_zip_is_refused_and_the_partial_extraction_removed(
    tmp_path: Path, sample_dir: Path
) -> None:
    members = _real_members(sample_dir, 3)
    archive = _deflated(tmp_path / "corrupt.zip", members)
    blob = bytearray(archive.read_bytes())
    second = blob.find(members[1][0].encode()) + len(members[1][0]) + 200
    blob[second : second + 64] = bytes(64)  # the first member is fine, the second is not
    archive.write_bytes(bytes(blob))
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match=r"^refusing corrupt.zip: corrupt or unreadable"):
        safe_extract_zip(archive, target)
    _assert_nothing_left(tmp_path, target)
    (tmp_path / "text.zip").write_text("not a zip at all\n")
    with pytest.raises(UnsafeArchiveError, match="refusing text.zip: corrupt or unreadable zip"):
        safe_extract_zip(tmp_path / "text.zip", target)


@pytest.mark.skipif(shutil.which("zip") is None, reason="the zip command makes the encrypted zip")
def test_an_encrypted_zip_is_refused(tmp_path: Path, sample_dir: Path) -> None:
    folder = tmp_path / "src" / "A"
    folder.mkdir(parents=True)
    for name, data in _real_members(sample_dir, 2):
        (folder.parent / name).write_bytes(data)
    archive = tmp_path / "locked.zip"
    subprocess.run(
        ["zip", "-q", "-r", "-P", "secret", str(archive), "A"], cwd=folder.parent, check=True
    )
    with pytest.raises(
        UnsafeArchiveError, match=r"refusing locked.zip: member 'A/.*' is encrypted"
    ):
        safe_extract_zip(archive, tmp_path / "target")
    _assert_nothing_left(tmp_path, tmp_path / "target")


@pytest.mark.parametrize(
    "names, message",
    [
        (["A/ok.jpg", "B", "B/x.jpg"], "'B' is both a file and a folder"),
        (["A/ok.jpg", "B/x.jpg", "B"], "'B' is both a file and a folder"),
        (["A/ok.jpg", "A/ok.jpg"], "member 'A/ok.jpg' appears twice"),
    ],
)
def test_file_folder_clash_and_duplicates_are_refused(
    tmp_path: Path, sample_dir: Path, names: list[str], message: str
) -> None:
    data = _real_members(sample_dir, 1)[0][1]
    archive = tmp_path / "clash.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate
        _zip(archive, [(n, data) for n in names])
    with pytest.raises(UnsafeArchiveError, match=f"refusing clash.zip: {message}"):
        safe_extract_zip(archive, tmp_path / "target")
    _assert_nothing_left(tmp_path, tmp_path / "target")


def test_bad_limit_settings_are_refused(tmp_path: Path, limits_env) -> None:
    archive = _zip(tmp_path / "ok.zip", [("A/a.jpg", b"a")])
    for value, why in (("lots", "is not a number"), ("0", "must be positive")):
        limits_env.setenv("ASL_ZIP_MAX_MEMBERS", value)
        with pytest.raises(ValueError, match=f"ASL_ZIP_MAX_MEMBERS='{value}' {why}"):
            safe_extract_zip(archive, tmp_path / "target")


def test_stale_staging_of_a_killed_extraction_is_cleaned(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    stale = tmp_path / f".target.part{proc.pid}"
    (stale / "A").mkdir(parents=True)
    archive = _zip(tmp_path / "ok.zip", [("A/a.jpg", b"a")])
    safe_extract_zip(archive, tmp_path / "target")
    assert not stale.exists() and (tmp_path / "target" / "A" / "a.jpg").read_bytes() == b"a"


def test_validate_raw_turns_a_corrupt_zip_into_one_line(
    asl_workspace: Path, tmp_path: Path, sample_dir: Path
) -> None:
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(UnsafeArchiveError) as caught:
        validate_raw(tmp_path / "bad.zip", report_dir=tmp_path / "rep", progress=False)
    assert "\n" not in str(caught.value) and "corrupt or unreadable zip" in str(caught.value)
    assert not list((asl_workspace / "extracted").glob("*/*"))


# --- member names the file system cannot take: refused in one line, before anything is written --

LONG_COMPONENT = "A/" + "x" * 300 + ".jpg"  # over NAME_MAX (255 bytes)
LONG_PATH = "/".join(["d" * 200] * 21) + "/a.jpg"  # every part fits, the whole is over PATH_MAX


def _named_zip(path: Path, name: str, data: bytes = b"y") -> Path:
    """A zip with a good member and one named ``name`` exactly (``""`` included)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("A/ok.jpg", b"x")
        info = zipfile.ZipInfo("placeholder")
        info.filename = name  # ZipInfo() and writestr() would each rewrite some of these
        zf.writestr(info, data)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[-1] == name
    return path


@pytest.mark.parametrize(
    "name, message",
    [
        (".", r"member '\.' names the target folder itself"),
        ("", "member '' has an empty name"),
        (
            LONG_COMPONENT,
            r"member 'A/x{58}'\.\.\. has a 304 byte name component, over the file system's 255 ",
        ),
        (LONG_PATH, r"member 'd{60}'\.\.\. makes a path over the file system's \d+ byte limit"),
    ],
    ids=["dot", "empty", "long-component", "long-path"],
)
def test_names_the_file_system_cannot_take_are_refused_before_writing(
    tmp_path: Path, name: str, message: str
) -> None:
    archive = _named_zip(tmp_path / "z.zip", name)
    target = tmp_path / "out" / "target"
    with pytest.raises(UnsafeArchiveError, match=f"^refusing z.zip: {message}") as caught:
        safe_extract_zip(archive, target)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200
    _assert_nothing_left(target.parent, target)


def test_dot_components_are_the_names_without_them(tmp_path: Path) -> None:
    """``./A/x.jpg`` (with a ``./`` entry) is ``A/x.jpg``, and so counts as its duplicate."""
    dotted = tmp_path / "dotted.zip"
    with zipfile.ZipFile(dotted, "w") as zf:
        for name, data in (("./", b""), ("./A/", b""), ("./A/x.jpg", b"x"), ("B/./y.jpg", b"y")):
            info = zipfile.ZipInfo("placeholder")
            info.filename = name
            zf.writestr(info, data)
    target = tmp_path / "target"
    safe_extract_zip(dotted, target)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*.jpg")) == [
        "A/x.jpg",
        "B/y.jpg",
    ]
    twice = _named_zip(tmp_path / "twice.zip", "A/./ok.jpg")
    with pytest.raises(UnsafeArchiveError, match="appears twice"):
        safe_extract_zip(twice, tmp_path / "other")


def test_an_os_error_while_writing_is_a_refusal_and_nothing_is_left(
    tmp_path: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills up half way (or a name only the OS refuses): one line, no half tree."""
    archive = _deflated(tmp_path / "full.zip", _real_members(sample_dir, 3))
    write = safe_extract._stream_member
    calls = []

    def write_then_fill_the_disk(zf, info, dest, budget, limits):
        calls.append(info.filename)
        if len(calls) == 2:
            dest.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(dest))
        return write(zf, info, dest, budget, limits)

    monkeypatch.setattr(safe_extract, "_stream_member", write_then_fill_the_disk)
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract_zip(archive, target)
    assert str(caught.value) == (
        f"refusing full.zip: cannot write member {calls[1]!r} (No space left on device)"
    )
    _assert_nothing_left(tmp_path, target)


@pytest.mark.parametrize(
    "name, message",
    [
        (".", "member '.' names the target folder itself"),
        (LONG_COMPONENT, "has a 304 byte name component"),
        ("", "member '' has an empty name"),
    ],
    ids=["dot", "long-component", "empty"],
)
def test_validate_raw_task_refuses_hostile_names_in_one_line(
    task_env: dict[str, str], asl_workspace: Path, tmp_path: Path, name: str, message: str
) -> None:
    archive = _named_zip(tmp_path / "z.zip", name)
    result = run_script("tasks/validate_raw.py", "--source", archive, env=task_env, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("validate_raw: error: refusing z.zip: member "), result.stderr[-3000:]
    assert message in last
    assert list((asl_workspace / "extracted").iterdir()) == []  # nothing left behind
    assert not (asl_workspace / "datasets").exists()  # nothing published

"""Every bad-input case ends quarantined with its own reason or normalised with the fact recorded.

The fixtures are made from real Kaggle frames (truncated, converted, rotated, duplicated), plus
the non-images a real upload carries (zero bytes, text named .jpg, OS litter, a bomb-sized PNG).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from asl_testkit.images import bomb_png
from PIL import Image

from asl_recognition.classes import CLASSES
from asl_recognition.data.raw import validate_raw
from asl_recognition.data.rules import usability
from asl_recognition.data.scan import scan_source
from asl_recognition.store import get_store


def build_bad_source(root: Path, sample: Path, per_class: int = 2) -> dict[str, str]:
    """A Kaggle-layout folder with ``per_class`` clean frames per class plus every bad case.

    Returns {relative path: expected reason} for the quarantined files and
    {relative path: "fact:<fact>"} for the normalised ones.
    """
    firsts: dict[str, Path] = {}
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for src in sorted((sample / cls).glob("*.jpg"))[:per_class]:
            shutil.copyfile(src, root / cls / src.name)
            firsts.setdefault(cls, src)
    expected: dict[str, str] = {}

    data = firsts["A"].read_bytes()
    (root / "A" / "A_truncated.jpg").write_bytes(data[: len(data) // 2])
    expected["A/A_truncated.jpg"] = "truncated_or_corrupt"
    (root / "B" / "B_zero.jpg").write_bytes(b"")
    expected["B/B_zero.jpg"] = "empty_file"
    (root / "C" / "C_text.jpg").write_text("this is a text file, not a photograph\n")
    expected["C/C_text.jpg"] = "not_an_image"
    (root / "unknown_sign").mkdir()
    shutil.copyfile(firsts["D"], root / "unknown_sign" / "D_elsewhere.jpg")
    expected["unknown_sign/D_elsewhere.jpg"] = "unknown_class:unknown_sign"
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    (root / "E" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    (root / "__MACOSX" / "F").mkdir(parents=True)
    (root / "__MACOSX" / "F" / "._F1.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    for litter in (".DS_Store", "E/.DS_Store", "__MACOSX/F/._F1.jpg"):
        expected[litter] = "litter"
    (root / "notes.txt").write_text("loose file next to the class folders\n")
    expected["notes.txt"] = "no_class_folder"
    bomb_png(root / "G" / "G_bomb.png", 8000)  # 64 MP: over the 40 MP bound of imageio
    expected["G/G_bomb.png"] = "decompression_bomb"
    bomb_png(root / "G" / "G_bomb_huge.png", 20000)  # 400 MP: Pillow's own bomb error
    expected["G/G_bomb_huge.png"] = "decompression_bomb"
    shutil.copyfile(firsts["H"], root / "H" / "H_zcopy.jpg")
    expected["H/H_zcopy.jpg"] = f"duplicate_of:H/{firsts['H'].name}"
    with Image.open(firsts["I"]) as img:
        img.resize((16, 16)).save(root / "I" / "I_tiny.jpg")
    expected["I/I_tiny.jpg"] = "size_out_of_bounds:16x16"
    os.symlink(root / "J" / firsts["J"].name, root / "J" / "J_link.jpg")
    expected["J/J_link.jpg"] = "symlink"

    with Image.open(firsts["K"]) as img:
        rgba = img.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(root / "K" / "K_rgba.png")
        img.convert("L").save(root / "L" / "L_gray.jpg")
        img.convert("CMYK").save(root / "M" / "M_cmyk.jpg")
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        img.crop((0, 0, 200, 120)).save(root / "N" / "N_exif.jpg", exif=exif)
    expected["K/K_rgba.png"] = "fact:converted_from:RGBA"
    expected["L/L_gray.jpg"] = "fact:converted_from:L"
    expected["M/M_cmyk.jpg"] = "fact:converted_from:CMYK"
    expected["N/N_exif.jpg"] = "fact:exif_transposed:orientation=6"
    return expected


@pytest.fixture(scope="module")
def bad_source(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bad") / "upload"
    return root, build_bad_source(root, sample_dir)


def _check_report(report: dict, expected: dict[str, str]) -> None:
    reasons = {q["path"]: q["reason"] for q in report["quarantined"]}
    facts = {(n["path"], n["fact"]) for n in report["normalised"]}
    for rel, want in expected.items():
        if want.startswith("fact:"):
            assert (rel, want[5:]) in facts, rel
            assert rel not in reasons, rel
        else:
            assert reasons.get(rel) == want, rel
    unexpected = set(reasons) - set(expected)
    assert not unexpected, f"clean real frames quarantined: {unexpected}"


def test_every_bad_input_gets_its_own_reason(asl_workspace: Path, bad_source) -> None:
    root, expected = bad_source
    out = validate_raw(root, min_per_class=2, report_dir=asl_workspace / "rep", progress=False)
    report = json.loads(Path(out["report_path"]).read_text())
    _check_report(report, expected)

    n_files = sum(1 for p in root.rglob("*") if p.is_file() or p.is_symlink())
    summary = report["summary"]
    assert summary["total"] == n_files
    assert summary["valid"] + summary["quarantined"] == n_files
    assert summary["quarantined"] == sum(not v.startswith("fact:") for v in expected.values())
    assert summary["per_class"]["K"] == 3  # the RGBA frame is usable after conversion
    assert report["usable"] is True and out["raw_dataset_id"]
    assert report["success"] is False  # GX says the raw upload is not clean ...
    failed = {
        (f["expectation"], f["column"]) for f in report["gx"]["suites"]["asl_raw_files"]["failed"]
    }
    assert ("expect_column_values_to_be_in_set", "class") in failed
    assert ("expect_column_values_to_be_in_set", "decodes") in failed
    assert ("expect_column_values_to_be_unique", "sha256") in failed
    assert ("expect_column_values_to_be_between", "width") in failed
    assert ("expect_column_values_to_not_be_null", "class") in failed
    report_dir = asl_workspace / "rep"
    assert (report_dir / "data_docs" / "index.html").is_file()
    assert json.loads((report_dir / "gx_results.json").read_text())["asl_raw_files"]["results"]

    # ... and the raw version still keeps every file (a link is recorded, never followed).
    raw = get_store().get(dataset_id=out["raw_dataset_id"])
    stored = {f.path for f in raw.files}
    assert stored == {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    assert {".DS_Store", "__MACOSX/F/._F1.jpg", "A/A_truncated.jpg", "B/B_zero.jpg"} <= stored


def test_gx_failures_name_the_files_and_classes_they_failed_on(
    asl_workspace: Path, sample_dir: Path, tmp_path: Path
) -> None:
    """report.json's GX section gave the failing values only: ``[null]`` for a file whose
    header was unreadable, ``[1]`` for a class below the minimum, ``[]`` for a missing one."""
    root = tmp_path / "src"
    for cls in CLASSES[:-1]:  # no "space"
        (root / cls).mkdir(parents=True)
        for src in sorted((sample_dir / cls).glob("*.jpg"))[: 1 if cls == "Q" else 2]:
            shutil.copyfile(src, root / cls / src.name)
    frame = sorted((sample_dir / "A").glob("*.jpg"))[5].read_bytes()
    (root / "A" / "cut.jpg").write_bytes(frame[: len(frame) // 3])
    (root / "A" / "empty.jpg").write_bytes(b"")
    out = validate_raw(root, min_per_class=2, report_dir=tmp_path / "rep", progress=False)
    gx = json.loads(Path(out["report_path"]).read_text())["gx"]["suites"]
    which = {
        (suite, f["column"]): f["which"] for suite, v in gx.items() for f in v["failed"]
    }  # fmt: skip
    assert which[("asl_raw_files", "decodes")] == ["A/cut.jpg", "A/empty.jpg"]
    assert which[("asl_raw_files", "width")] == ["A/empty.jpg"]
    assert which[("asl_raw_class_counts", "valid")] == ["Q"]
    assert which[("asl_raw_class_counts", "class")] == ["space"]


def test_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    (tmp_path / "A").mkdir()
    bomb_png(tmp_path / "A" / "bomb.png", 8000)
    row = scan_source(tmp_path, workers=1, progress=False).table.iloc[0]
    assert row["error"] == "decompression_bomb"
    assert (row["width"], row["height"]) == (8000, 8000)  # read from the header ...
    assert row["phash"] is None  # ... the pixels were never decoded


def test_exif_rotation_is_applied(tmp_path: Path, sample_dir: Path) -> None:
    from asl_recognition.imageio import load_rgb

    src = sorted((sample_dir / "A").glob("*.jpg"))[0]
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(src) as img:
        img.crop((0, 0, 200, 120)).save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").size == (120, 200)


def test_zip_upload_with_wrapper_folder_and_macosx(
    asl_workspace: Path, bad_source, tmp_path: Path
) -> None:
    root, expected = bad_source
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                rel = path.relative_to(root).as_posix()
                if rel.startswith("__MACOSX/"):
                    zf.write(path, rel.replace("__MACOSX/", "__MACOSX/asl_upload/"))
                else:
                    zf.write(path, f"asl_upload/{rel}")
    expected = {k: v for k, v in expected.items() if v != "symlink"}
    expected["__MACOSX/asl_upload/F/._F1.jpg"] = expected.pop("__MACOSX/F/._F1.jpg")
    out = validate_raw(archive, min_per_class=2, report_dir=tmp_path / "rep", progress=False)
    report = json.loads(Path(out["report_path"]).read_text())
    assert report["data_root"] == "asl_upload"
    prefixed = {
        (k if k.startswith("__MACOSX") else f"asl_upload/{k}"): v.replace(
            "duplicate_of:", "duplicate_of:asl_upload/"
        )
        for k, v in expected.items()
    }
    _check_report(report, prefixed)
    assert out["usable"] and out["raw_dataset_id"]


def test_unusable_when_a_class_is_missing_or_below_minimum(tmp_path: Path, sample_dir) -> None:
    root = tmp_path / "src"
    for cls in CLASSES[:-1]:  # no "space"
        shutil.copytree(sample_dir / cls, root / cls)
    (root / "B" / "B_zero.jpg").write_bytes(b"")
    from asl_recognition.data.rules import apply_rules

    table = apply_rules(scan_source(root, workers=1, progress=False).table)
    ok, reason, per_class = usability(table, CLASSES, 10)
    assert not ok and reason == "class(es) missing: space"
    ok, reason, _ = usability(table, CLASSES[:-1], 21)
    assert not ok and reason.startswith("28 class(es) below --min-per-class 21")
    ok, reason, _ = usability(table, CLASSES[:-1], 20)
    assert ok and reason is None and per_class["B"] == 20


def test_nothing_readable_is_unusable(tmp_path: Path) -> None:
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "a.jpg").write_text("not an image")
    from asl_recognition.data.rules import apply_rules

    table = apply_rules(scan_source(tmp_path, workers=1, progress=False).table)
    ok, reason, _ = usability(table, CLASSES, 1)
    assert not ok and reason.startswith("nothing readable")


def test_images_outside_the_class_folders_are_named_in_the_unusable_line(
    asl_workspace: Path, sample_dir: Path, tmp_path: Path
) -> None:
    """The Kaggle download itself (``asl_alphabet_train/asl_alphabet_train/<CLASS>/`` beside
    ``asl_alphabet_test/``) and Massey's lowercase letter folders: every photo readable, and
    the run said "nothing readable" or listed 26 missing classes without saying why."""
    from asl_recognition.paths import REPO_ROOT

    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for cls in CLASSES:
            for src in sorted((sample_dir / cls).glob("*.jpg"))[:2]:
                zf.write(src, f"asl_alphabet_train/asl_alphabet_train/{cls}/{src.name}")
        for src in sorted((REPO_ROOT / "data" / "test_images").glob("*.jpg"))[:3]:
            zf.write(src, f"asl_alphabet_test/asl_alphabet_test/{src.name}")
    out = validate_raw(archive, min_per_class=2, report_dir=tmp_path / "r1", progress=False)
    assert not out["usable"] and out["unusable_reason"].startswith(
        "no image in a class folder: 0 valid images among 61 files; the folders holding them "
        "are 'asl_alphabet_test', 'asl_alphabet_train', not classes"
    )
    lower = tmp_path / "lower"
    for cls in CLASSES:
        folder = lower / (cls.lower() if len(cls) == 1 else cls)
        folder.mkdir(parents=True)
        for src in sorted((sample_dir / cls).glob("*.jpg"))[:2]:
            shutil.copyfile(src, folder / src.name)
    out = validate_raw(lower, min_per_class=2, report_dir=tmp_path / "r2", progress=False)
    assert out["unusable_reason"].endswith(
        "Z; class folder names are case-sensitive: 'a' is not 'A', 'b' is not 'B', 'c' is not "
        "'C' (and 23 more)"
    )


def test_kernel_folders_are_refused_and_unreadable_files_recorded(tmp_path: Path) -> None:
    """/proc holds files that vanish or never end: refused as a source before any read; a
    file that cannot be read (or vanished) is one recorded row, not a crash of the scan."""
    from asl_recognition.data.per_file import scan_file
    from asl_recognition.data.rules import UNSTORABLE
    from asl_recognition.data.scan import scan_source

    for folder in ("/proc/self", "/sys", "/dev"):
        with pytest.raises(ValueError, match="a kernel folder, not images"):
            scan_source(folder, progress=False)
    for root, name in (("/proc/self", "mem"), (str(tmp_path), "A/gone.jpg")):
        row = scan_file((root, name, "A", False, 10**6))
        assert row["error"] == "unreadable" and name in row["error_detail"], row
    assert "unreadable" in UNSTORABLE


def test_a_file_rewritten_between_its_check_and_publishing_is_never_published(
    asl_workspace: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process rewrites a frame after the scan validated it (the rewrite runs at the
    start of publishing, where the window is): the version would hold bytes nobody checked,
    and its fingerprint would hand them to every later run of the intact folder."""
    from asl_recognition.data import raw

    root = asl_workspace / "frames"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for src in sorted((sample_dir / cls).glob("*.jpg"))[:2]:
            shutil.copyfile(src, root / cls / src.name)
    victim = sorted((root / "A").glob("*.jpg"))[0]
    intact = victim.read_bytes()
    real_publish = raw.publish_raw

    def rewritten_meanwhile(*args, **kwargs):
        victim.write_bytes(b"not an image at all\n")
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(raw, "publish_raw", rewritten_meanwhile)
    with pytest.raises(ValueError, match=f"A/{victim.name} changed after it was checked"):
        validate_raw(root, min_per_class=2, report_dir=asl_workspace / "rep", progress=False)
    assert get_store("local").list_versions("ASL_raw") == []  # nothing published
    monkeypatch.setattr(raw, "publish_raw", real_publish)
    victim.write_bytes(intact)
    out = validate_raw(root, min_per_class=2, report_dir=asl_workspace / "rep2", progress=False)
    version = get_store("local").get(dataset_id=out["raw_dataset_id"])
    folder = get_store("local").local_copy(version)
    assert (folder / "A" / victim.name).read_bytes() == intact


def test_a_file_name_that_is_not_utf8_is_quarantined_by_name(
    asl_workspace: Path, sample_dir: Path, tmp_path: Path
) -> None:
    """A Latin-1 name (``caf\\xe9.jpg``, from an older system or a copy tool) failed the whole
    run inside GX with "'utf-8' codec can't encode character '\\udce9'", naming no file."""
    root = tmp_path / "src"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for src in sorted((sample_dir / cls).glob("*.jpg"))[:2]:
            shutil.copyfile(src, root / cls / src.name)
    latin1 = os.fsencode(root / "A") + b"/caf\xe9.jpg"
    shutil.copyfile(sorted((sample_dir / "A").glob("*.jpg"))[5], os.fsdecode(latin1))
    out = validate_raw(root, min_per_class=2, report_dir=tmp_path / "rep", progress=False)
    report = json.loads(Path(out["report_path"]).read_text())
    assert report["quarantined"] == [{"path": "A/caf\\xe9.jpg", "reason": "name_not_utf8"}]
    version = get_store().get(dataset_id=out["raw_dataset_id"])
    assert len(version.files) == 2 * len(CLASSES)  # every other file, the odd name not stored

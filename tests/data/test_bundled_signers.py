"""make run's bundled photos: several signers for every letter, original files.

Other signers are what makes the landmark model answer for other people (five Massey signers in
make run's data took the served model from 0.664 to 0.719 on phone photos, docs/results.md), so
the recipe's data must keep them: a slice cut back to one or two signers per letter, or photos
re-encoded on the way in, fail here rather than in an accuracy table weeks later.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter

import pytest

from asl_recognition.classes import CLASSES
from asl_recognition.data.sources import signer_of
from asl_recognition.paths import REPO_ROOT, SHARED_DATA
from asl_recognition.pipeline.dag import ASL_DAG
from asl_recognition.pipeline.recipe import recipe_sources

RUN = REPO_ROOT / "configs" / "run.yaml"
LETTERS = [c for c in CLASSES if len(c) == 1]
SIGNERS_PER_LETTER = 5
PHOTOS_PER_SIGNER = 5


def test_make_run_trains_on_five_massey_signers_for_every_letter() -> None:
    massey = recipe_sources(ASL_DAG, RUN)["massey"]
    for letter in LETTERS:
        photos = sorted((massey / letter).iterdir())
        signers = Counter(signer_of(p.name) for p in photos)
        assert None not in signers, f"{letter}: a photo without a signer in its name"
        assert len(signers) == SIGNERS_PER_LETTER, f"{letter}: signers {sorted(signers)}"
        assert set(signers.values()) == {PHOTOS_PER_SIGNER}, f"{letter}: {dict(signers)}"


def test_the_bundled_massey_photos_are_the_shared_originals() -> None:
    shared = SHARED_DATA / "asl_external_massey"
    if not shared.is_dir():
        pytest.skip(f"{shared} is absent on this machine")
    massey = recipe_sources(ASL_DAG, RUN)["massey"]
    photos = sorted(massey.glob("*/*"))
    assert len(photos) == len(LETTERS) * SIGNERS_PER_LETTER * PHOTOS_PER_SIGNER
    assert_originals(photos, shared)


def assert_originals(photos: list, originals) -> None:
    """Each bundled photo is its original in ``originals``, byte for byte (not re-encoded)."""
    for photo in photos:
        original = originals / photo.parent.name / photo.name
        digest = hashlib.sha256(photo.read_bytes()).hexdigest()
        assert digest == hashlib.sha256(original.read_bytes()).hexdigest(), photo


HG_PHOTOS_PER_SIGNER = 2
HG_SIGNERS = {f"P{n}" for n in range(1, 11)}
# P6's I and V are P5's shots again (two byte-identical): they were removed from the bundled copy.
HG_REMOVED = {("I", "P6"), ("V", "P6")}


def hg_signer(name: str) -> str:
    """ASL-HG names read ``P3_A_247.jpg``: participant 3, letter A, photo 247."""
    return name.split("_", 1)[0]


def test_make_run_trains_on_the_ten_asl_hg_signers_for_every_letter() -> None:
    hg = recipe_sources(ASL_DAG, RUN)["hg"]
    for letter in LETTERS:
        signers = Counter(hg_signer(p.name) for p in (hg / letter).iterdir())
        expected = {s for s in HG_SIGNERS if (letter, s) not in HG_REMOVED}
        assert set(signers) == expected, f"{letter}: signers {sorted(signers)}"
        assert set(signers.values()) == {HG_PHOTOS_PER_SIGNER}, f"{letter}: {dict(signers)}"


GENERALISE = REPO_ROOT / "configs" / "generalise.yaml"
HG_MANIFEST = REPO_ROOT / "data" / "manifests" / "asl_hg.csv"
HG_PHOTOS = 26 * 10 * 10 - 2 * 10 - 1  # 10 per letter and participant; P6's I/V, one twin out


def test_the_bundled_asl_hg_photos_are_the_manifests_originals() -> None:
    """The recipe's ASL-HG folder is its manifest, byte for byte: every photo the manifest lists
    and no other, none re-encoded (the manifest names each one's origin and sha256)."""
    hg = recipe_sources(ASL_DAG, GENERALISE)["hg"]
    with HG_MANIFEST.open(newline="") as handle:
        listed = {row["file"]: row["sha256"] for row in csv.DictReader(handle)}
    photos = {p.relative_to(hg).as_posix(): p for p in hg.glob("*/*")}
    assert len(listed) == HG_PHOTOS and set(photos) == set(listed)
    for name, photo in photos.items():
        assert hashlib.sha256(photo.read_bytes()).hexdigest() == listed[name], name


def test_make_runs_asl_hg_photos_are_the_recipes_originals() -> None:
    photos = sorted(recipe_sources(ASL_DAG, RUN)["hg"].glob("*/*"))
    assert_originals(photos, recipe_sources(ASL_DAG, GENERALISE)["hg"])

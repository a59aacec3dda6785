"""What the trained landmark model must do with real photos, whatever its accuracy figure says.

Made-With-ML's ``tests/model`` style: behaviours, each with a stated tolerance, on bundled real
photos, through the served path (conftest.py). The photos asked about are the 26 letters of the
Kaggle test set (data/test_images) and one Massey crop of every other letter (other signers);
none was trained on. Invariances are measured on the photos the model answers correctly as they
are (a photo it already gets wrong says nothing about what a change of light does).

- Invariance: a photo re-encoded at JPEG quality 40, 0.7x or 1.3x as bright, turned 10 degrees
  either way, or at 0.8x its size keeps its letter for at least ``KEEP`` of the photos.
- A left hand (the photo mirrored) gets the right hand's letter for at least ``MIRROR_KEEP``:
  the features mirror a left hand back (``hands.features_from_landmarks``).
- A photo without a hand (the Kaggle ``nothing`` frames) is answered ``nothing``, for at least
  ``NOTHING`` of them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from asl_recognition.imageio import load_rgb
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA

NO_HAND = sorted((SAMPLE_DATA / "nothing").glob("*.jpg")) + [
    REPO_ROOT / "data" / "test_images" / "nothing_test.jpg"
]
# Tolerances; measured with make run's recipe when written: 38 of 39 photos known, JPEG 40 92%,
# brightness 95%, rotation 96%, scale 95%, mirrored 97%, no hand 21 of 21.
KNOWN = 0.8  # the model answers at least this share of the photos asked about correctly
KEEP = 0.85  # a change of the photo keeps the letter of at least this share of the known ones
MIRROR_KEEP = 0.9  # 86% with the left-hand mirror of the features switched off
NOTHING = 0.95  # share of the photos without a hand answered `nothing`
REFERENCE_QUALITY = 95  # every photo is sent as a JPEG at this quality, changed or not


@dataclass
class Photo:
    path: Path
    truth: str
    rgb: np.ndarray


def decoded(path: Path) -> np.ndarray:
    """The photo's upright RGB pixels, through the project's one decoder."""
    with load_rgb(path) as img:
        return np.asarray(img)


def jpeg(rgb: np.ndarray, quality: int = REFERENCE_QUALITY) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=quality)
    return out.getvalue()


def brightness(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda rgb: np.asarray(ImageEnhance.Brightness(Image.fromarray(rgb)).enhance(factor))


def rotation(degrees: float) -> Callable[[np.ndarray], np.ndarray]:
    """Turned about the centre, same size (the corners that come in are black)."""
    return lambda rgb: np.asarray(
        Image.fromarray(rgb).rotate(degrees, resample=Image.Resampling.BILINEAR)
    )


def scale(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    def scaled(rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        size = (round(width * factor), round(height * factor))
        return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))

    return scaled


# name: the photo's bytes after the change (each a JPEG of the decoded photo).
CHANGES: dict[str, list[Callable[[np.ndarray], bytes]]] = {
    "jpeg_quality_40": [lambda rgb: jpeg(rgb, 40)],
    "brightness_0.7_and_1.3": [lambda rgb, f=f: jpeg(brightness(f)(rgb)) for f in (0.7, 1.3)],
    "rotation_10_degrees_each_way": [lambda rgb, d=d: jpeg(rotation(d)(rgb)) for d in (10, -10)],
    "scale_0.8": [lambda rgb: jpeg(scale(0.8)(rgb))],
}


@pytest.fixture(scope="module")
def answered(served, asked) -> list[tuple[Photo, str]]:
    """Every asked photo with the letter the served model gives it unchanged."""
    photos = [Photo(p, truth, decoded(p)) for p, truth in asked]
    assert len(photos) == 26 + 13
    letters = served.letters([jpeg(photo.rgb) for photo in photos])
    return list(zip(photos, letters))


@pytest.fixture(scope="module")
def known(answered) -> list[Photo]:
    """The photos answered correctly as they are: what the invariances are measured on."""
    photos = [photo for photo, letter in answered if letter == photo.truth]
    known, asked = len(photos), len(answered)
    assert known >= KNOWN * asked, f"the model answers only {known} of {asked} photos right"
    return photos


def share_kept(served, photos: list[Photo], changes) -> tuple[float, list[str]]:
    """Share of (photo, change) pairs answered with the photo's letter, and the others."""
    kept, lost = 0, []
    for change in changes:
        letters = served.letters([change(photo.rgb) for photo in photos])
        for photo, letter in zip(photos, letters):
            kept += letter == photo.truth
            if letter != photo.truth:
                lost.append(f"{photo.path.name}: {photo.truth} -> {letter}")
    return kept / (len(photos) * len(changes)), lost


def test_the_model_knows_the_letters_it_is_asked_about(answered) -> None:
    """The precondition of the invariances; an untrained or mis-trained model stops here."""
    wrong = [f"{p.path.name}: {letter}" for p, letter in answered if letter != p.truth]
    assert len(answered) - len(wrong) >= KNOWN * len(answered), wrong


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_photo_keeps_its_letter_when(name: str, served, known) -> None:
    share, lost = share_kept(served, known, CHANGES[name])
    assert share >= KEEP, f"{name}: {share:.0%} kept (< {KEEP:.0%}); {lost}"


def test_a_left_hand_gets_the_right_hands_letter(served, known) -> None:
    """The photo mirrored shows the same sign made with the other hand."""
    share, lost = share_kept(served, known, [lambda rgb: jpeg(np.ascontiguousarray(rgb[:, ::-1]))])
    assert share >= MIRROR_KEEP, f"mirrored: {share:.0%} kept (< {MIRROR_KEEP:.0%}); {lost}"


def test_a_photo_without_a_hand_is_answered_nothing(served) -> None:
    letters, found = served.answer([path.read_bytes() for path in NO_HAND])
    answers = {p.name: (letter, hand) for p, letter, hand in zip(NO_HAND, letters, found)}
    nothing = sum(letter == "nothing" for letter in letters)
    assert nothing >= NOTHING * len(NO_HAND), f"(letter, hand found): {answers}"

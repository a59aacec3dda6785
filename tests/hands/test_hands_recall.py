"""The detection passes (hands.passes): hands that fill the frame and backlit hands are found now
and were missed by the one-pass detector; empty frames stay empty; a clear photo costs one pass;
the data stage's fingerprint, its options and the served parameters follow the detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asl_recognition.data.landmarks import fingerprint
from asl_recognition.data.options import PublishLandmarksOptions
from asl_recognition.hands import DEFAULT_PASSES, HandLandmarker, Pass
from asl_recognition.hands.passes import DEFAULT_MIN_DETECTION, DEFAULT_MIN_PRESENCE
from asl_recognition.imageio import load_rgb
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA
from asl_recognition.serving.hands_repository import DEFAULT_HAND_PARAMETERS

# The detector before the passes: one pass with a 0.15 border, palm score 0.3.
BEFORE = {"min_detection": 0.3, "passes": (Pass(0.15, 1.0),), "recrop": False}
# Real photos; the hand of each is cropped out so that it fills the frame (see tight_crop).
FRAME_FILLERS = [
    "data/external_sample/J/hand1_j_bot_seg_1_cropped.jpeg",
    "data/external_sample/Q/hand1_q_bot_seg_1_cropped.jpeg",
    "data/external_sample/S/hand1_s_bot_seg_1_cropped.jpeg",
    "data/sample/B/B2062.jpg",
    "data/sample/C/C2910.jpg",
    "data/sample/E/E2214.jpg",
]
# Backlit Kaggle frames (a near-black hand before a bright window), as bundled.
BACKLIT = ["data/sample/A/A2868.jpg", "data/sample/M/M2662.jpg", "data/sample/Z/Z2821.jpg"]
# Real photos made grayscale (as 56 of the Roboflow phone photos are).
GRAYED = [
    "data/external_sample/B/hand4_b_bot_seg_2_cropped.jpeg",
    "data/sample/B/B2258.jpg",
    "data/sample/E/E498.jpg",
]


@pytest.fixture(scope="module")
def before(hand_models: Path) -> HandLandmarker:
    pytest.importorskip("ai_edge_litert", reason="the runtime pin ai-edge-litert==2.3.0 is absent")
    return HandLandmarker(hand_models, **BEFORE)


def photo(relative: str) -> np.ndarray:
    with load_rgb(REPO_ROOT / relative) as img:
        return np.asarray(img)


def tight_crop(
    rgb: np.ndarray, points: np.ndarray, grow: float = 0.05
) -> tuple[np.ndarray, int, int]:
    """The photo cut to the hand's own landmark box (plus ``grow`` of it): the hand fills it."""
    (x0, y0), (x1, y1) = points[:, :2].min(0), points[:, :2].max(0)
    gx, gy = grow * (x1 - x0), grow * (y1 - y0)
    left, top = max(0, int(x0 - gx)), max(0, int(y0 - gy))
    right, bottom = min(rgb.shape[1], int(x1 + gx)), min(rgb.shape[0], int(y1 + gy))
    return np.ascontiguousarray(rgb[top:bottom, left:right]), left, top


def test_a_hand_that_fills_the_frame_is_found_now(hand_models: Path, before) -> None:
    """Each crop was missed by the one-pass detector; the passes find the same hand in it.

    The crops are cut around the palm region's points (no re-crop), as they were chosen."""
    landmarker = HandLandmarker(hand_models, recrop=False)
    errors = []
    for relative in FRAME_FILLERS:
        rgb = photo(relative)
        whole = landmarker.detect(rgb)
        assert whole is not None, relative
        crop, left, top = tight_crop(rgb, whole.landmarks)
        assert before.detect(crop) is None, f"{relative}: the old detector found this crop"
        found = landmarker.detect(crop)
        assert found is not None, f"{relative}: the hand filling the frame was missed"
        # the same hand: its points, moved back into the photo, lie where the whole photo's do
        moved = found.landmarks[:, :2] + [left, top]
        errors.append(np.abs(moved - whole.landmarks[:, :2]).mean() / max(crop.shape[:2]))
    # a fist cut to its own outline may be read a little differently (measured: 2-14%)
    assert np.median(errors) < 0.08 and max(errors) < 0.2, np.round(errors, 3)


def test_a_backlit_hand_is_found_now(landmarker, before, hand_models: Path) -> None:
    """The palm detector finds these dark hands, the landmark model rejects them as they are;
    the brightened pass gives landmarks it trusts, inside the photo."""
    unbrightened = HandLandmarker(hand_models, passes=DEFAULT_PASSES[:2])
    assert all(p.gamma == 1.0 for p in unbrightened.passes)
    for relative in BACKLIT:
        rgb = photo(relative)
        assert before.detect(rgb) is None and unbrightened.detect(rgb) is None, relative
        found = landmarker.detect(rgb)
        assert found is not None and found.presence >= DEFAULT_MIN_PRESENCE, relative
        h, w = rgb.shape[:2]
        inside = (found.landmarks[:, 0] > -0.05 * w) & (found.landmarks[:, 0] < 1.05 * w)
        assert inside.all() and np.ptp(found.landmarks[:, :2], axis=0).max() > 0.2 * min(h, w)


def grayscale(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(rgb.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)


def test_a_gray_hand_is_found_now(landmarker, before, hand_models: Path) -> None:
    """The colour passes reject these gray hands; the tint passes (gray photos only) find the
    hand the colour photo shows, in the same place."""
    colour_only = HandLandmarker(hand_models, passes=[p for p in DEFAULT_PASSES if not p.tint])
    for relative in GRAYED:
        rgb = photo(relative)
        gray = grayscale(rgb)
        assert before.detect(gray) is None and colour_only.detect(gray) is None, relative
        found, reference = landmarker.detect(gray), landmarker.detect(rgb)
        assert found is not None and reference is not None, relative
        error = np.abs(found.landmarks[:, :2] - reference.landmarks[:, :2]).mean()
        assert error < 0.1 * max(rgb.shape[:2]), f"{relative}: points moved {error:.0f} px"


def test_tint_passes_run_on_gray_photos_only() -> None:
    colour = photo("data/sample/B/B2258.jpg")
    tint = Pass(0.15, 1.0, tint=True)
    assert not tint.applies(colour) and tint.applies(grayscale(colour))
    assert Pass(0.15).applies(colour) and Pass(0.15).applies(grayscale(colour))
    tinted = tint.brighten(grayscale(colour))
    red, green, blue = (tinted[..., i].astype(int).sum() for i in range(3))
    assert red > green > blue  # warm, skin-like


def test_nothing_frames_stay_hand_free(landmarker) -> None:
    """Every pass is judged by the landmark model's presence: no bundled empty frame gets a hand
    (measured: 0 of the 200 shared Kaggle ``nothing`` frames, bench/bench_hands_recall.py)."""
    paths = sorted((SAMPLE_DATA / "nothing").glob("*.jpg"))
    assert len(paths) >= 10
    found = [p.name for p in paths if landmarker.detect_path(p) is not None]
    assert not found, found


class CountingLandmarker(HandLandmarker):
    """The real landmarker, counting the passes each ``detect`` runs."""

    def _detect_once(self, rgb, step):
        self.runs.append(step)
        return super()._detect_once(rgb, step)


def test_a_clear_photo_costs_one_pass_and_an_empty_one_all(hand_models: Path) -> None:
    counting = CountingLandmarker(hand_models)
    counting.runs = []
    assert counting.detect(photo(FRAME_FILLERS[0])) is not None
    assert counting.runs == [DEFAULT_PASSES[0]]
    counting.runs = []
    empty = sorted((SAMPLE_DATA / "nothing").glob("*.jpg"))[0]
    assert counting.detect_path(empty) is None
    # a colour photo skips the tint passes; a gray one without a hand runs every pass
    assert counting.runs == [p for p in DEFAULT_PASSES if not p.tint]
    counting.runs = []
    assert counting.detect(grayscale(photo(str(empty.relative_to(REPO_ROOT))))) is None
    assert counting.runs == list(DEFAULT_PASSES)


def test_gamma_brightens_dark_pixels_and_keeps_the_border_black() -> None:
    values = np.array([[[0, 10, 128], [255, 60, 1]]], dtype=np.uint8)
    bright = Pass(0.15, 0.35).brighten(values)
    assert bright.dtype == np.uint8 and bright[0, 0, 0] == 0 and bright[0, 1, 0] == 255
    between = (values > 0) & (values < 255)
    assert (bright[between] > values[between]).all()
    assert Pass(0.15, 1.0).brighten(values) is values


@pytest.mark.parametrize(
    "passes, reason",
    [
        ((), "at least one"),
        ((Pass(-0.1),), "pad"),
        ((Pass(0.1, 0.0),), "gamma"),
        ((0.15,), "Pass"),
    ],
)
def test_bad_passes_are_refused_in_one_line(hand_models: Path, passes, reason) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        HandLandmarker(hand_models, passes=passes)
    assert "\n" not in str(info.value)


def test_the_fingerprint_changes_with_the_detector(hand_models: Path) -> None:
    """A table measured with other passes or thresholds is never reused for this detector."""
    settings = HandLandmarker(hand_models).settings()
    same = fingerprint("a" * 32, hand_models, HandLandmarker(hand_models).settings())
    assert fingerprint("a" * 32, hand_models, settings) == same
    others = [
        HandLandmarker(hand_models, **BEFORE).settings(),
        HandLandmarker(hand_models, passes=DEFAULT_PASSES[:2]).settings(),
        HandLandmarker(hand_models, passes=DEFAULT_PASSES[:-1]).settings(),
        HandLandmarker(hand_models, min_presence=0.6).settings(),
        HandLandmarker(hand_models, variant="lite").settings(),
        HandLandmarker(hand_models, recrop=False).settings(),
    ]
    prints = {fingerprint("a" * 32, hand_models, other) for other in others}
    assert same not in prints and len(prints) == len(others)


def test_data_stage_and_served_step_use_the_detector_defaults() -> None:
    """publish_landmarks' options and the Triton hand step's parameters are the landmarker's
    defaults (data/options.py cannot import numpy: the enqueue environment lacks it)."""
    options = PublishLandmarksOptions()
    assert (options.min_detection, options.min_presence) == (
        DEFAULT_MIN_DETECTION,
        DEFAULT_MIN_PRESENCE,
    )
    assert DEFAULT_HAND_PARAMETERS["min_detection"] == DEFAULT_MIN_DETECTION
    assert DEFAULT_HAND_PARAMETERS["min_presence"] == DEFAULT_MIN_PRESENCE

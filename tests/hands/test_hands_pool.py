"""The worker pool finds exactly the hands the parent's landmarker finds, in input order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asl_recognition.hands import HandLandmarker, Pass
from asl_recognition.hands import pool as hand_pool
from asl_recognition.hands.landmarker import photo_row

PHOTOS = sorted(Path("data/test_images").glob("*.jpg"))


def test_two_workers_give_the_parents_rows_in_order(
    landmarker: HandLandmarker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hand_pool, "POOL_MIN_PHOTOS", 2)
    paths = PHOTOS[:12] + [Path("README.md")]  # one file that is not a photo
    serial = [photo_row(landmarker, p) for p in paths]
    pooled = hand_pool.map_photos(photo_row, landmarker, paths, workers=2, progress=False)
    assert pooled[-1] is None and serial[-1] is None
    assert sum(row[-1] for row in serial[:-1]) >= 8, "the bundled test photos show hands"
    for expected, got in zip(serial[:-1], pooled[:-1]):
        np.testing.assert_array_equal(expected, got)


def test_workers_use_the_parents_settings_not_the_defaults(
    hand_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A landmarker that can never trust a hand finds none in its workers either."""
    monkeypatch.setattr(hand_pool, "POOL_MIN_PHOTOS", 2)
    strict = HandLandmarker(hand_models, min_presence=1.01, passes=(Pass(0.15, 1.0),))
    rows = hand_pool.map_photos(photo_row, strict, PHOTOS[:6], workers=2, progress=False)
    assert [row[-1] for row in rows] == [0.0] * 6


def test_default_workers_without_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS and Windows have no ``os.sched_getaffinity``: the core count decides there."""
    from asl_recognition import workers

    monkeypatch.delattr(workers.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 8)
    assert workers.default_workers() == 2
    monkeypatch.setattr(workers.os, "cpu_count", lambda: None)
    assert workers.default_workers() == 1


def test_recorded_settings_rebuild_the_same_landmarker(hand_models: Path) -> None:
    """What a table records (``settings()``, through JSON as a model carries it) rebuilds a
    landmarker with exactly those settings; an empty record gives the defaults."""
    import json

    from asl_recognition.hands import detector_arguments

    custom = HandLandmarker(
        hand_models,
        min_detection=0.3,
        min_presence=0.6,
        passes=(Pass(0.2, 0.5), Pass(0.6, 1.0, True)),
        recrop=False,
    )
    recorded = json.loads(json.dumps(custom.settings()))
    again = HandLandmarker(hand_models, **detector_arguments(recorded))
    assert again.settings() == custom.settings() != HandLandmarker(hand_models).settings()
    assert HandLandmarker(hand_models, **detector_arguments({})).settings() == (
        HandLandmarker(hand_models).settings()
    )

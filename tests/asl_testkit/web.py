"""The web page tests' fixtures: a landmark model fitted on the bundled test photos, served by a
real tritonserver, and the web app (live page, status page) in a thread on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from asl_testkit.cdp import camera_view
from asl_testkit.servers import start_server
from asl_testkit.tiny_models import export_landmark_classifier

from asl_recognition.classes import CLASSES
from asl_recognition.data.landmarks import POINT_COLUMNS, measure
from asl_recognition.hands import HandLandmarker, features_from_landmarks
from asl_recognition.netutil import free_port
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA

TEST_IMAGES = REPO_ROOT / "data" / "test_images"
CAMERA_SIDE = 240  # the fake camera's frame side in the page tests


def photo(label: str) -> Path:
    return TEST_IMAGES / f"{label}_test.jpg"


def fitted_landmark_model(root: Path) -> Path:
    """A landmark classifier fitted on the data stage's features of every bundled test photo
    with a hand, as a file and as the fake camera delivers it (:func:`camera_view`), plus two
    sample photos per class: it knows the test photos' letters, also through the webcam."""
    landmarker = HandLandmarker()
    features, labels = [], []
    paths = []
    for path in sorted(TEST_IMAGES.glob("*_test.jpg")):
        label = path.stem.rsplit("_test", 1)[0]
        paths.append((path, label))
        for quality in (70, 90):
            seen = root / f"camera-{quality}-{path.name}"
            paths.append((camera_view(path, CAMERA_SIDE, seen, quality), label))
    for label in CLASSES:
        paths += [(p, label) for p in sorted((SAMPLE_DATA / label).glob("*.jpg"))[:2]]
    for path, label in paths:
        row = measure(landmarker, path)
        if row["hand_found"] and label in CLASSES:
            points = np.array([row[c] for c in POINT_COLUMNS], np.float32).reshape(21, 3)
            features.append(features_from_landmarks(points, row["handedness"]))
            labels.append(CLASSES.index(label))
    return export_landmark_classifier(root, np.stack(features), np.array(labels))


def landmark_repository(root: Path) -> Path:
    """The fitted model's generated Triton repository (hand step + classifier), as make run
    builds one: ``root/repo``."""
    from asl_recognition.serving.repository import build_repository

    (root / "model").mkdir(parents=True, exist_ok=True)
    onnx = fitted_landmark_model(root / "model")
    repo = root / "repo"
    build_repository(onnx, root / "model" / "classes.txt", repo, max_batch_size=4)
    return repo


def serve_landmark_model(root: Path):
    """(server, repo): the fitted model's generated repository on a real tritonserver."""
    repo = landmark_repository(root)
    return start_server(repo, root, poll_secs=1, exit_timeout_secs=2), repo


def start_web(grpc_url: str = "127.0.0.1:1", status=None, **changes):
    """The web app on a free loopback port, in a thread; ``.url``, ``.stop()``. ``status``: a
    :class:`StatusSource` for the status page's routes (``/status``, ``/api/status`` ...)."""
    from asl_recognition.monitoring.dashboard import status_routes
    from asl_recognition.serving.front import FrontServer
    from asl_recognition.web.app import create_app
    from asl_recognition.web.options import WebOptions

    options = WebOptions(triton=grpc_url, port=free_port(), **changes)
    routes = status_routes(status) if status is not None else None
    return FrontServer(create_app(options, routes), "127.0.0.1", options.port, options).start()

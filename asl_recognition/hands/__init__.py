"""Hand landmarks (MediaPipe's palm detector + 21-point model via LiteRT) and their features."""

from asl_recognition.hands.landmarker import (
    HandLandmarker,
    HandResult,
    detector_arguments,
    features_from_landmarks,
    landmark_features,
)
from asl_recognition.hands.models import (
    ModelFileError,
    ensure_models,
    hand_models,
    verify_models,
)
from asl_recognition.hands.passes import DEFAULT_PASSES, Pass

__all__ = [
    "DEFAULT_PASSES",
    "Pass",
    "HandLandmarker",
    "HandResult",
    "ModelFileError",
    "detector_arguments",
    "ensure_models",
    "features_from_landmarks",
    "hand_models",
    "landmark_features",
    "verify_models",
]

"""Hand landmarks from a photo: palm detector, then the 21-point landmark model on the hand crop.

Runtime: LiteRT (``ai-edge-litert``) runs MediaPipe's two ``.tflite`` files as they ship. The
``mediapipe`` package itself is not used: it requires protobuf<5, which this project's onnx,
tensorboard and tritonclient pins exclude. ONNX is not used yet: tflite2onnx cannot convert the
palm detector and tf2onnx pulls TensorFlow. LiteRT needs only numpy, has a cp310 wheel for the
Triton 24.10 image's Python backend (2.3.0, as pinned here), and all pre/post-processing is numpy
(``geometry``), so a later switch of the two model calls to ONNX on GPU leaves the rest as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from asl_recognition.hands import geometry
from asl_recognition.hands.models import verify_models
from asl_recognition.hands.passes import (
    DEFAULT_MIN_DETECTION,
    DEFAULT_MIN_PRESENCE,
    DEFAULT_PASSES,
    Pass,
    check_passes,
)

HANDEDNESS = ("Left", "Right")  # MediaPipe's label order: the model's score is for index 0
MIN_SIDE = 16
# The longest side ``HandLandmarker.detect`` runs its passes on; a larger photo is shrunk to it
# once (box filter) and the points mapped back. The palm detector sees 192 px and the landmark
# crop is 224 px, so more pixels find nothing more, while every pass copies the photo framed in
# a border of up to 0.6 of its longer side and brightened: a 6300 px photo (40 MP, what the
# decoder lets through) made 13860 px squares, 6.3 s and 2.1 GB per request. 1920 is above every
# bundled and shared photo (the largest side is 416 px, Roboflow's) and a full-HD webcam frame,
# so none of those changes.
MAX_WORKING_SIDE = 1920
VARIANTS = ("full", "lite")  # MediaPipe's two model sizes, shipped side by side
FEATURE_COUNT = 63  # 21 points x (x, y, z), see features_from_landmarks
# What HandLandmarker.settings() records: everything that decides which points a photo gets.
DETECTOR_KEYS = ("variant", "min_detection", "min_presence", "passes", "recrop")
# Where an exported landmark classifier carries them (ONNX metadata_props, JSON).
DETECTOR_METADATA_KEY = "asl.hand_detector"


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class HandResult:
    """One hand: ``landmarks`` (21, 3) in image pixels (x, y, depth scaled like x) and scores.

    ``handedness`` follows MediaPipe's convention (it assumes a mirrored, selfie-style image).
    ``box`` (x0, y0, x1, y1) bounds the region the landmark model saw, clipped to the image.
    From :meth:`HandLandmarker.detect`, ``palm`` and ``roi`` stay in the frame the models saw
    (bordered, and shrunk when the photo is over ``MAX_WORKING_SIDE``).
    """

    landmarks: np.ndarray
    world_landmarks: np.ndarray
    handedness: str
    handedness_score: float
    presence: float
    detection_score: float
    box: tuple[float, float, float, float]
    palm: geometry.Palm
    roi: geometry.Roi


class TfliteModel:
    """One ``.tflite`` file behind a plain call: float32 array in, outputs by tensor name.

    An interpreter is not thread safe: use one ``HandLandmarker`` per thread or process.
    """

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.interpreter.set_tensor(self.input["index"], batch.astype(np.float32, copy=False))
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(i).copy() for name, i in self.outputs.items()}


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """Refuse anything but an (H, W, 3) uint8 array of a usable size, with a one-line reason."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", type(rgb).__name__)
        raise ValueError(f"expected an RGB array of shape (H, W, 3), got {shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {rgb.dtype}")
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image {rgb.shape[1]}x{rgb.shape[0]} is under {MIN_SIDE} px a side")
    return np.ascontiguousarray(rgb)


class HandLandmarker:
    """Finds the most confident hand in an RGB photo and returns its 21 landmarks.

    ``min_detection`` gates the palm detector's score, ``min_presence`` the landmark model's
    hand-presence score (MediaPipe's ``min_detection_confidence`` / ``min_tracking_confidence``).
    ``passes`` are tried in order until one finds a hand (see ``passes.DEFAULT_PASSES``).
    ``recrop``: measure a found hand once more on the region its own points give, as MediaPipe
    tracks a hand from frame to frame (leave-one-source-out, three seeds: Roboflow phone photos
    +2.6 points, Kaggle +1.1; docs/results.md). Model files are verified by sha256 on load (see
    ``models.ensure_models``).
    """

    def __init__(
        self,
        models_dir: str | Path | None = None,
        min_detection: float = DEFAULT_MIN_DETECTION,
        min_presence: float = DEFAULT_MIN_PRESENCE,
        variant: str = "full",
        num_threads: int = 1,
        passes: tuple[Pass, ...] = DEFAULT_PASSES,
        recrop: bool = True,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be 'full' or 'lite', got {variant!r}")
        self.passes = check_passes(passes)
        self.variant = variant
        folder = verify_models(models_dir)
        self.models_dir = folder
        self.palm_model = TfliteModel(folder / f"palm_detection_{variant}.tflite", num_threads)
        self.landmark_model = TfliteModel(folder / f"hand_landmark_{variant}.tflite", num_threads)
        self.anchors = geometry.ssd_anchors()
        self.min_detection = min_detection
        self.min_presence = min_presence
        self.recrop = bool(recrop)

    def settings(self) -> dict[str, object]:
        """Everything that decides which hand is found (not the model bytes): for fingerprints."""
        return {
            "variant": self.variant,
            "min_detection": self.min_detection,
            "min_presence": self.min_presence,
            "passes": [[p.pad, p.gamma, p.tint] for p in self.passes],
            "recrop": self.recrop,
        }

    def find_palms(self, rgb: np.ndarray) -> list[geometry.Palm]:
        """All palms above ``min_detection`` in image pixels, best first."""
        rgb = check_rgb(rgb)
        tensor, box = geometry.letterbox(rgb)
        out = self.palm_model(tensor[None])
        decoded = geometry.decode_palms(
            out["Identity"][0], out["Identity_1"][0], self.anchors, self.min_detection
        )
        return geometry.palms_in_image(geometry.weighted_nms(*decoded), box)

    def landmarks(self, rgb: np.ndarray, palm: geometry.Palm) -> HandResult | None:
        """Run the landmark model on the region around ``palm``; None below ``min_presence``.

        With ``recrop``, a hand found there is measured again on the region its points give
        (:meth:`recropped`)."""
        rgb = check_rgb(rgb)
        result = self._landmarks_in(rgb, geometry.palm_to_roi(palm), palm)
        return self.recropped(rgb, result) if self.recrop and result is not None else result

    def recropped(self, rgb: np.ndarray, result: HandResult) -> HandResult:
        """``result``'s hand measured on ``geometry.landmarks_to_roi`` of its points; ``result``
        itself when the landmark model sees no hand there."""
        roi = geometry.landmarks_to_roi(result.landmarks)
        again = self._landmarks_in(check_rgb(rgb), roi, result.palm)
        return result if again is None else again

    def _landmarks_in(
        self, rgb: np.ndarray, roi: geometry.Roi, palm: geometry.Palm
    ) -> HandResult | None:
        """The landmark model on ``roi`` of ``rgb``: the hand, or None below ``min_presence``."""
        out = self.landmark_model(geometry.crop_roi(rgb, roi)[None])
        presence = float(out["Identity_1"].reshape(-1)[0])
        if presence < self.min_presence:
            return None
        left = float(out["Identity_2"].reshape(-1)[0])
        label, score = (HANDEDNESS[0], left) if left >= 0.5 else (HANDEDNESS[1], 1.0 - left)
        points = geometry.roi_to_image(out["Identity"].reshape(21, 3), roi)
        world = out["Identity_3"].reshape(21, 3)
        height, width = rgb.shape[:2]
        x0, y0, x1, y1 = roi.bounds()
        box = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
        return HandResult(
            landmarks=points.astype(np.float32),
            world_landmarks=world.astype(np.float32),
            handedness=label,
            handedness_score=score,
            presence=presence,
            detection_score=palm.score,
            box=box,
            palm=palm,
            roi=roi,
        )

    def detect(self, rgb: np.ndarray) -> HandResult | None:
        """The most confident hand in ``rgb`` (H, W, 3 uint8), or None when there is none.

        Each pass frames the photo in a black border (``pad`` times its longer side; the palm
        detector misses hands that fill the frame) and may brighten it (``gamma`` < 1; the
        landmark model rejects backlit, near-black hands). The first pass whose best palm passes
        ``min_detection`` and whose landmarks pass ``min_presence`` wins, so a clear photo costs
        one pass. A photo whose longer side is over ``MAX_WORKING_SIDE`` is shrunk to it once
        first, and the passes run on that copy. Landmarks and box are returned in the original
        photo's pixels.
        """
        rgb = check_rgb(rgb)
        seen, scale = shrink(rgb)
        for step in self.passes:
            if not step.applies(seen):
                continue
            result = self._detect_once(seen, step)
            if result is not None:
                return unshrink(result, scale, rgb.shape)
        return None

    def _detect_once(self, rgb: np.ndarray, step: Pass) -> HandResult | None:
        """One pass: frame and brighten ``rgb`` as ``step`` says, best palm, its landmarks."""
        border = int(round(max(rgb.shape[:2]) * step.pad))
        framed = np.pad(rgb, ((border, border), (border, border), (0, 0))) if border else rgb
        seen = step.brighten(framed)
        palms = self.find_palms(seen)
        if not palms:
            return None
        result = self.landmarks(seen, palms[0])
        return None if result is None else unframe(result, border, rgb.shape)

    def detect_path(self, path: str | Path) -> HandResult | None:
        """Decode ``path`` through the project's bounded, EXIF-aware decoder, then ``detect``."""
        from asl_recognition.imageio import load_rgb

        with load_rgb(path) as img:
            return self.detect(np.asarray(img))


def shrink(
    rgb: np.ndarray, bound: int = MAX_WORKING_SIDE
) -> tuple[np.ndarray, tuple[float, float]]:
    """``rgb`` box-filtered down so its longer side is ``bound`` (as is when it is not over), and
    the (x, y) factors from its pixels back to ``rgb``'s. The shorter side keeps ``MIN_SIDE``."""
    height, width = rgb.shape[:2]
    longer = max(height, width)
    if longer <= bound:
        return rgb, (1.0, 1.0)
    new_width, new_height = (
        min(side, max(MIN_SIDE, round(side * bound / longer))) for side in (width, height)
    )
    small = Image.fromarray(rgb).resize((new_width, new_height), Image.Resampling.BOX)
    return np.asarray(small), (width / new_width, height / new_height)


def unshrink(result: HandResult, scale: tuple[float, float], shape: tuple[int, ...]) -> HandResult:
    """``result`` measured on the shrunk copy of :func:`shrink`, moved to the original's pixels.

    Depth is scaled like x (as ``geometry.roi_to_image`` does); ``palm`` and ``roi`` stay in the
    frame the models saw.
    """
    sx, sy = scale
    if sx == 1.0 and sy == 1.0:
        return result
    points = result.landmarks.astype(np.float64)
    points[:, 0] *= sx
    points[:, 1] *= sy
    points[:, 2] *= sx
    height, width = shape[:2]
    x0, y0, x1, y1 = result.box
    box = (
        max(0.0, x0 * sx),
        max(0.0, y0 * sy),
        min(float(width), x1 * sx),
        min(float(height), y1 * sy),
    )
    return replace(result, landmarks=points.astype(np.float32), box=box)


def unframe(result: HandResult, border: int, shape: tuple[int, ...]) -> HandResult:
    """``result`` measured on the bordered photo, moved back to the original's pixels.

    ``palm`` and ``roi`` stay in the bordered frame (they describe what the models saw).
    """
    if not border:
        return result
    points = result.landmarks.copy()
    points[:, :2] -= border
    height, width = shape[:2]
    x0, y0, x1, y1 = (v - border for v in result.box)
    box = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
    return replace(result, landmarks=points, box=box)


def detector_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``HandLandmarker`` keyword arguments that reproduce :meth:`HandLandmarker.settings`.

    How a model trained on one table is served with the hand step that measured it: the table
    records its settings, the model carries them, the served step is built from them. A key this
    package does not know is refused: a detector it cannot reproduce must not be served as if it
    were this one. Missing keys keep the defaults (a record older than the key).
    """
    unknown = sorted(set(settings) - set(DETECTOR_KEYS))
    if unknown:
        raise ValueError(
            f"hand detector settings {', '.join(unknown)} are unknown to this package "
            f"(known: {', '.join(DETECTOR_KEYS)})"
        )
    arguments: dict[str, Any] = {k: settings[k] for k in DETECTOR_KEYS if k in settings}
    try:
        if "passes" in arguments:
            arguments["passes"] = check_passes(
                tuple(_recorded_pass(step) for step in arguments["passes"])
            )
        for key in ("min_detection", "min_presence"):
            if key in arguments:
                arguments[key] = float(arguments[key])
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(
            f"hand detector settings {dict(settings)!r} are malformed: {exc}"
        ) from exc
    if arguments.get("variant", VARIANTS[0]) not in VARIANTS:
        raise ValueError(f"hand detector variant must be 'full' or 'lite': {dict(settings)!r}")
    if not isinstance(arguments.get("recrop", True), bool):
        raise ValueError(f"hand detector recrop must be true or false: {dict(settings)!r}")
    return arguments


def _recorded_pass(step: Any) -> Pass:
    """One ``[pad, gamma, tint]`` of :meth:`HandLandmarker.settings` as a :class:`Pass`."""
    pad, gamma, tint = step
    if not isinstance(tint, bool):
        raise ValueError(f"tint {tint!r} is not true or false")
    return Pass(float(pad), float(gamma), tint)


def features_from_landmarks(landmarks: np.ndarray, handedness: str) -> np.ndarray:
    """63 float32: wrist-relative points over the largest |x|, |y|; x negated for a left hand.

    This removes position and size, and maps left and right hands onto one shape.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(21, 3)
    points = points - points[0]
    scale = np.abs(points[:, :2]).max()
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError("landmarks are degenerate (all points on the wrist)")
    points = points / scale
    if handedness == HANDEDNESS[0]:
        points[:, 0] = -points[:, 0]
    elif handedness != HANDEDNESS[1]:
        raise ValueError(f"handedness must be 'Left' or 'Right', got {handedness!r}")
    return points.astype(np.float32).ravel()


def landmark_features(result: HandResult) -> np.ndarray:
    """The (63,) float32 feature vector of one detected hand (see ``features_from_landmarks``)."""
    return features_from_landmarks(result.landmarks, result.handedness)


def photo_row(landmarker: HandLandmarker, path: Path) -> np.ndarray | None:
    """(64,) float32: the photo's features and a found flag (zeros, 0 without a hand); None when
    it cannot be decoded. Module-level, so :func:`pool.map_photos` can run it in workers."""
    from asl_recognition.imageio import ImageDecodeError

    try:
        result = landmarker.detect_path(path)
    except (ImageDecodeError, OSError):
        return None
    return result_row(result)


def result_row(result: HandResult | None) -> np.ndarray:
    """(64,) float32 of one detection: a found hand's :func:`feature_row`, else zeros."""
    if result is None:
        return np.zeros(FEATURE_COUNT + 1, dtype=np.float32)
    return feature_row(result.landmarks, result.handedness)


def feature_row(landmarks: np.ndarray, handedness: str) -> np.ndarray:
    """(64,) float32: a found hand's features (``features_from_landmarks``) and the flag 1, the
    row the landmark model trains on and the served graph takes (as FEATURES, HAND_FOUND)."""
    return np.append(features_from_landmarks(landmarks, handedness), np.float32(1.0))

"""Pre- and post-processing around the two hand models, in numpy, from MediaPipe's graph options.

The parameters are those of MediaPipe's published palm-detection and hand-landmark graphs: a
192x192 letterbox on black, 2016 fixed-size SSD anchors (strides 8,16,16,16, two per layer),
boxes and 7 keypoints as offsets scaled by 192, sigmoid scores, weighted non-maximum suppression
at IoU 0.3; the hand region is the palm box turned so that wrist (keypoint 0) -> middle-finger
knuckle (keypoint 2) points up, moved half its height towards the fingers, squared on its long
side and grown 2.6x; it is cropped to 224x224 with the border replicated. Everything here is
pure and deterministic, so the data stage and the served pipeline compute the same numbers.

Coordinates are continuous pixels: pixel ``i`` covers ``[i, i+1)``, so an image spans
``[0, W] x [0, H]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

PALM_SIZE = 192
LANDMARK_SIZE = 224
STRIDES = (8, 16, 16, 16)
ANCHORS_PER_LAYER = 2  # aspect ratio 1.0 plus the interpolated-scale anchor
NUM_KEYPOINTS = 7
SCORE_CLIP = 100.0
NMS_IOU = 0.3
ROI_SCALE = 2.6
ROI_SHIFT_Y = -0.5
Z_NORM = 0.4  # MediaPipe's extra z scaling of the landmark model's output
# The re-crop from the landmarks (MediaPipe's hand_landmark_landmarks_to_roi.pbtxt and
# hand_landmarks_to_rect_calculator.cc): the box of these joints (wrist, thumb base, the two
# lower joints of each finger), turned upright, squared, grown 2x and moved a tenth of its
# height towards the fingers.
RECROP_JOINTS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
RECROP_SCALE = 2.0
RECROP_SHIFT_Y = -0.1


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the square model input: ``input = image * scale + offset``."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float


@dataclass(frozen=True)
class Palm:
    """One palm detection in image pixels: box (x0, y0, x1, y1), 7 keypoints, score."""

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float


@dataclass(frozen=True)
class Roi:
    """The rotated square the landmark model looks at, in image pixels; rotation in radians."""

    cx: float
    cy: float
    side: float
    rotation: float

    def bounds(self) -> tuple[float, float, float, float]:
        """Axis-aligned box (x0, y0, x1, y1) around the rotated square."""
        half = 0.5 * self.side * (abs(math.cos(self.rotation)) + abs(math.sin(self.rotation)))
        return (self.cx - half, self.cy - half, self.cx + half, self.cy + half)


def ssd_anchors(size: int = PALM_SIZE, strides: tuple[int, ...] = STRIDES) -> np.ndarray:
    """Anchor centres (N, 2) as (x, y) in [0, 1]; layers sharing a stride share one grid."""
    groups: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        cells = math.ceil(size / strides[layer])
        grid = (np.arange(cells, dtype=np.float64) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        groups.append(np.repeat(centres, ANCHORS_PER_LAYER * (same - layer), axis=0))
        layer = same
    return np.concatenate(groups).astype(np.float32)


def letterbox(rgb: np.ndarray, size: int = PALM_SIZE) -> tuple[np.ndarray, Letterbox]:
    """Fit ``rgb`` (H, W, 3 uint8) into a black ``size`` square, centred; float32 in [0, 1]."""
    height, width = rgb.shape[:2]
    scale = size / max(width, height)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    image = Image.fromarray(rgb)
    resized = np.asarray(image.resize((new_w, new_h), Image.BILINEAR, reducing_gap=3.0))
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    canvas[top : top + new_h, left : left + new_w] = resized.astype(np.float32) / 255.0
    return canvas, Letterbox(new_w / width, new_h / height, left, top)


def decode_palms(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model output -> boxes (n, 4) x0,y0,x1,y1, keypoints (n, 7, 2), scores (n,), in [0, 1]."""
    raw_boxes = raw_boxes.reshape(-1, 4 + 2 * NUM_KEYPOINTS).astype(np.float64)
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= min_score
    raw, centres, scores = raw_boxes[keep] / PALM_SIZE, anchors[keep], scores[keep]
    cx, cy = raw[:, 0] + centres[:, 0], raw[:, 1] + centres[:, 1]
    half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + centres[:, None, :]
    return boxes, keypoints, scores


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with many (x0, y0, x1, y1)."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Blend each cluster of overlapping boxes by score, best first; a cluster keeps its top score.

    Averaging the cluster (rather than keeping its best box) steadies the box and keypoints.
    """
    order = np.argsort(-scores, kind="stable")
    results = []
    while order.size:
        top = order[0]
        overlap = _iou(boxes[top], boxes[order]) > iou
        overlap[0] = True
        members = order[overlap]
        weights = scores[members][:, None]
        box = (boxes[members] * weights).sum(0) / weights.sum()
        kps = (keypoints[members] * weights[:, :, None]).sum(0) / weights.sum()
        results.append((box, kps, float(scores[top])))
        order = order[~overlap]
    return results


def palms_in_image(
    detections: list[tuple[np.ndarray, np.ndarray, float]], box: Letterbox, size: int = PALM_SIZE
) -> list[Palm]:
    """Undo the letterbox: normalised model-input coordinates -> image pixels."""
    offset = np.array([box.offset_x, box.offset_y])
    scale = np.array([box.scale_x, box.scale_y])
    palms = []
    for norm_box, norm_kps, score in detections:
        corners = (norm_box.reshape(2, 2) * size - offset) / scale
        kps = (norm_kps * size - offset) / scale
        palms.append(Palm(tuple(float(v) for v in corners.ravel()), kps.astype(np.float32), score))
    return palms


def upright_rotation(wrist: np.ndarray, knuckles: np.ndarray) -> float:
    """The turn in (-pi, pi] (image pixels, y down) that makes wrist -> knuckles point up."""
    (wx, wy), (kx, ky) = wrist[:2], knuckles[:2]
    rotation = math.pi / 2 - math.atan2(-(ky - wy), kx - wx)
    return rotation - 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))


def palm_to_roi(palm: Palm) -> Roi:
    """The landmark model's region: palm box turned upright, shifted to the fingers, grown 2.6x."""
    x0, y0, x1, y1 = palm.box
    width, height = x1 - x0, y1 - y0
    rotation = upright_rotation(palm.keypoints[0], palm.keypoints[2])
    # The shift is along the hand's own up axis, so it turns with the rotation.
    cx = (x0 + x1) / 2 - height * ROI_SHIFT_Y * math.sin(rotation)
    cy = (y0 + y1) / 2 + height * ROI_SHIFT_Y * math.cos(rotation)
    return Roi(cx=cx, cy=cy, side=max(width, height) * ROI_SCALE, rotation=rotation)


def landmarks_to_roi(points: np.ndarray) -> Roi:
    """The region MediaPipe's tracking crops next from a hand's own points (pixels, (21, 2+)).

    Turned so that the wrist -> (index, middle, ring knuckles) direction points up; the box is
    that of :data:`RECROP_JOINTS` in the turned frame. In a video MediaPipe feeds the landmark
    model this region on every frame after the first; the palm detector's is only the start.
    """
    points = np.asarray(points, dtype=np.float64)[:, :2]
    knuckles = ((points[5] + points[13]) / 2 + points[9]) / 2  # index and ring, then middle
    rotation = upright_rotation(points[0], knuckles)
    cos, sin = math.cos(rotation), math.sin(rotation)
    joints = points[list(RECROP_JOINTS)]
    # Into the hand's upright frame (the inverse turn), box there, centre back out.
    u = cos * joints[:, 0] + sin * joints[:, 1]
    v = -sin * joints[:, 0] + cos * joints[:, 1]
    mid_u, mid_v = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    width, height = u.max() - u.min(), v.max() - v.min()
    cx = cos * mid_u - sin * mid_v - height * RECROP_SHIFT_Y * sin
    cy = sin * mid_u + cos * mid_v + height * RECROP_SHIFT_Y * cos
    return Roi(cx=cx, cy=cy, side=max(width, height) * RECROP_SCALE, rotation=rotation)


def roi_to_image(points: np.ndarray, roi: Roi, size: int = LANDMARK_SIZE) -> np.ndarray:
    """Crop pixels (n, 2+) -> image pixels; a third column (depth) is scaled like x."""
    cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)
    u = (points[:, 0] / size - 0.5) * roi.side
    v = (points[:, 1] / size - 0.5) * roi.side
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, 0] = roi.cx + cos * u - sin * v
    out[:, 1] = roi.cy + sin * u + cos * v
    if out.shape[1] > 2:
        out[:, 2] = points[:, 2] / size / Z_NORM * roi.side
    return out


def crop_roi(rgb: np.ndarray, roi: Roi, size: int = LANDMARK_SIZE) -> np.ndarray:
    """Sample the rotated square into ``size`` x ``size`` float32 in [0, 1], border replicated.

    Only the part of the photo under the square is touched: it is box-averaged by an integer
    factor when much larger than the output (no aliasing on big photos), edge-padded to cover the
    square (the replicated border), then resampled by one bilinear affine warp.
    """
    height, width = rgb.shape[:2]
    factor = max(1, int(roi.side / size))
    bx0, by0, bx1, by1 = roi.bounds()
    x0 = min(max(0, math.floor(bx0)), width - 1)
    y0 = min(max(0, math.floor(by0)), height - 1)
    x1, y1 = max(min(width, math.ceil(bx1)), x0 + 1), max(min(height, math.ceil(by1)), y0 + 1)
    region = Image.fromarray(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
    if factor > 1:
        region = region.reduce(factor)
    array = np.asarray(region)
    # Reduced pixels needed beyond each side of the region (+2 for the bilinear neighbours).
    left, top = (
        max(0, math.ceil((x0 - bx0) / factor)) + 2,
        max(0, math.ceil((y0 - by0) / factor)) + 2,
    )
    right = max(0, math.ceil((bx1 - x0) / factor) - array.shape[1]) + 2
    bottom = max(0, math.ceil((by1 - y0) / factor) - array.shape[0]) + 2
    padded = np.pad(array, ((top, bottom), (left, right), (0, 0)), mode="edge")
    origin_x, origin_y = x0 - left * factor, y0 - top * factor
    # Output pixel centre (j + .5, i + .5) -> padded-region coordinates, linear in both.
    cos, sin, step = math.cos(roi.rotation), math.sin(roi.rotation), roi.side / size
    corner_x = roi.cx - (cos - sin) * roi.side / 2
    corner_y = roi.cy - (sin + cos) * roi.side / 2
    coeffs = (
        cos * step / factor,
        -sin * step / factor,
        (corner_x - origin_x) / factor,
        sin * step / factor,
        cos * step / factor,
        (corner_y - origin_y) / factor,
    )
    warped = Image.fromarray(padded).transform((size, size), Image.AFFINE, coeffs, Image.BILINEAR)
    return np.asarray(warped, dtype=np.float32) / 255.0

"""The numpy pieces around the models: anchor grid, weighted NMS, letterbox and ROI round trips."""

from __future__ import annotations

import math

import numpy as np

from asl_recognition.hands.geometry import (
    Palm,
    Roi,
    landmarks_to_roi,
    letterbox,
    palm_to_roi,
    palms_in_image,
    roi_to_image,
    ssd_anchors,
    weighted_nms,
)


def test_anchor_grid_matches_the_detector_output() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (2016, 2)  # the palm model's 2016 boxes, one per anchor
    assert np.allclose(anchors[:2], 0.5 / 24)  # two anchors per cell of the 24x24 grid
    assert np.allclose(anchors[2], [1.5 / 24, 0.5 / 24])
    assert np.allclose(anchors[1152:1158], 0.5 / 12)  # six per cell of the 12x12 grid
    assert np.allclose(anchors[-1], 11.5 / 12)


def test_weighted_nms_blends_a_cluster_and_keeps_a_separate_box() -> None:
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]])
    keypoints = np.stack([np.full((7, 2), v) for v in (0.2, 0.23, 0.7)])
    scores = np.array([0.6, 0.9, 0.8])
    out = weighted_nms(boxes, keypoints, scores)
    assert [score for _b, _k, score in out] == [0.9, 0.8]
    blended, kps, _score = out[0]
    expected = (boxes[0] * 0.6 + boxes[1] * 0.9) / 1.5
    assert np.allclose(blended, expected) and np.allclose(kps, (0.2 * 0.6 + 0.23 * 0.9) / 1.5)
    assert np.allclose(out[1][0], boxes[2])


def test_letterbox_centres_and_maps_back() -> None:
    rgb = np.full((100, 300, 3), 200, dtype=np.uint8)
    canvas, box = letterbox(rgb)
    assert canvas.shape == (192, 192, 3) and canvas.dtype == np.float32
    assert canvas[:, :, 0].max() <= 1.0 and canvas[0, 0, 0] == 0.0  # black band on top
    assert np.isclose(canvas[96, 96, 0], 200 / 255)
    # The model-input corners of the photo come back as its own corners.
    norm = np.array([box.offset_x, box.offset_y, 192 - box.offset_x, 192 - box.offset_y]) / 192
    palm = palms_in_image([(norm, np.tile(norm[:2], (7, 1)), 0.9)], box)[0]
    assert np.allclose(palm.box, [0, 0, 300, 100], atol=1e-6)


def test_roi_turns_with_the_hand_and_maps_the_crop_centre_to_itself() -> None:
    upright = np.array([[50, 80], [0, 0], [50, 40]] + [[0, 0]] * 4, dtype=np.float32)
    roi = palm_to_roi(Palm((30, 40, 70, 80), upright, 0.9))
    assert roi.rotation == 0 and math.isclose(roi.side, 40 * 2.6)
    assert math.isclose(roi.cx, 50) and math.isclose(roi.cy, 60 - 20)  # half a box to the fingers
    sideways = np.array([[30, 60], [0, 0], [70, 60]] + [[0, 0]] * 4, dtype=np.float32)
    turned = palm_to_roi(Palm((30, 40, 70, 80), sideways, 0.9))
    assert math.isclose(turned.rotation, math.pi / 2) and math.isclose(turned.cx, 50 + 20)
    centre = roi_to_image(np.array([[112.0, 112.0, 0.0]]), Roi(10, 20, 50, 1.0))
    assert np.allclose(centre[0, :2], [10, 20])
    top = roi_to_image(np.array([[112.0, 0.0]]), turned)  # the crop's top: towards the fingers
    assert top[0, 0] > turned.cx and math.isclose(top[0, 1], turned.cy, abs_tol=1e-6)


def upright_hand() -> np.ndarray:
    """21 points (x, y) of an open hand, wrist at the bottom, fingers up (y grows downwards)."""
    points = np.zeros((21, 2))
    points[0] = (48, 100)  # wrist, under the knuckles' mean
    points[1:5] = [(35, 90), (25, 80), (18, 70), (12, 62)]  # thumb, far to the left
    for finger, x in enumerate((40, 48, 56, 64)):  # index .. little finger: knuckle, 3 joints
        start = 5 + 4 * finger
        points[start : start + 4] = [(x, 70), (x, 55), (x, 45), (x, 38)]
    return points


def test_the_recrop_region_bounds_the_lower_joints_and_turns_with_the_hand() -> None:
    """MediaPipe's landmarks-to-ROI: box of wrist, thumb base and the two lower joints of each
    finger (x 18..64, y 55..100), squared on its long side, grown 2x, a tenth of its height
    towards the fingers; turned with the hand about any point."""
    points = upright_hand()
    roi = landmarks_to_roi(points)
    assert math.isclose(roi.rotation, 0.0, abs_tol=1e-9)
    assert math.isclose(roi.side, 2 * (64 - 18))
    assert math.isclose(roi.cx, (18 + 64) / 2) and math.isclose(roi.cy, (55 + 100) / 2 - 4.5)
    angle, pivot = math.radians(70), np.array([200.0, -30.0])
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    turned = landmarks_to_roi((points - pivot) @ turn.T + pivot)
    assert math.isclose(turned.rotation, angle) and math.isclose(turned.side, roi.side)
    centre = turn @ (np.array([roi.cx, roi.cy]) - pivot) + pivot
    assert np.allclose([turned.cx, turned.cy], centre)
    # the crop's top edge lies towards the fingertips
    top = roi_to_image(np.array([[112.0, 0.0]]), turned)[0]
    tips = ((points[[8, 12, 16, 20]] - pivot) @ turn.T + pivot).mean(axis=0)
    wrist = (points[0] - pivot) @ turn.T + pivot
    assert np.linalg.norm(top - tips) < np.linalg.norm(top - wrist)

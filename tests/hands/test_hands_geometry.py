"""The numpy pieces around the models: anchor grid, weighted NMS, letterbox and ROI round trips."""

from __future__ import annotations

import math

import numpy as np

from asl_recognition.hands.geometry import (
    Palm,
    Roi,
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

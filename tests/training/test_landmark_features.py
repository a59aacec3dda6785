"""Features derived inside the landmark model: right on hand-made hands, invariant where they
should be, and exported to ONNX with the served contract (features[N,63], hand_found[N,1])
unchanged, ORT matching torch.

Issue 20.4: the confusable letters (M/N/S/T/A/E, U/R/V) differ in finger bends, touching
fingertips and where the thumb tip sits; the served graph must keep taking 63 features.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from asl_recognition.training.export import LANDMARK_OUTPUT, contract, export_onnx, onnx_session
from asl_recognition.training.landmark_features import (
    DERIVED,
    DerivedFeatures,
    InPlaneTTA,
    Upright,
    joint_cosines,
    renormalise,
    rotate,
    tip_distances,
    upright,
)
from asl_recognition.training.landmark_model import FEATURES, LandmarkMLP, LandmarkNet


def open_hand() -> torch.Tensor:
    """(1, 21, 3): five straight fingers fanned upwards from the wrist (image y grows down)."""
    points = torch.zeros(1, 21, 3)
    for finger, base in enumerate((1, 5, 9, 13, 17)):
        direction = torch.tensor([math.sin(0.3 * (finger - 2)), -math.cos(0.3 * (finger - 2))])
        for joint in range(4):
            points[0, base + joint, :2] = (0.2 + 0.2 * joint) * direction
    return points


def random_rows(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Rows of [63 renormalised features, hand_found], a quarter without a hand (zeros)."""
    g = torch.Generator().manual_seed(seed)
    points = renormalise(open_hand().repeat(n, 1, 1) + 0.1 * torch.randn(n, 21, 3, generator=g))
    rows = torch.cat([points.reshape(n, FEATURES), torch.ones(n, 1)], dim=1)
    rows[: n // 4] = 0.0
    return rows


def test_straight_fingers_bend_nowhere_and_a_folded_finger_does() -> None:
    hand = open_hand()
    assert torch.allclose(joint_cosines(hand), torch.ones(1, 15), atol=1e-5)
    folded = hand.clone()
    folded[0, 8] = folded[0, 6]  # the index tip folded back onto its PIP joint
    cosines = joint_cosines(folded)
    assert cosines[0, 5] == pytest.approx(-1.0, abs=1e-5)  # index DIP: bent all the way back
    assert torch.allclose(cosines[0, :5], torch.ones(5), atol=1e-5)  # thumb untouched
    # the index tip now sits where its PIP was: so does its distance to the thumb tip
    expected = (folded[0, 4] - folded[0, 6]).norm()
    assert tip_distances(folded)[0, 0] == pytest.approx(float(expected))
    assert tip_distances(folded)[0, 0] != pytest.approx(float(tip_distances(hand)[0, 0]))


def test_derived_features_keep_the_points_and_add_34_rotation_free_ones() -> None:
    points = renormalise(open_hand() + 0.05 * torch.randn(1, 21, 3))
    features = points.reshape(1, FEATURES)
    out = DerivedFeatures()(features)
    assert out.shape == (1, FEATURES + DERIVED) and DERIVED == 34
    assert torch.equal(out[:, :FEATURES], features)
    turn = torch.tensor([math.radians(40.0)])
    turned = rotate(points, torch.cos(turn), torch.sin(turn)).reshape(1, FEATURES)
    bends = slice(FEATURES, FEATURES + 25)  # joint cosines and tip distances
    assert torch.allclose(DerivedFeatures()(turned)[:, bends], out[:, bends], atol=1e-5)


def test_upright_turns_every_hand_the_same_way() -> None:
    points = renormalise(open_hand() + 0.05 * torch.randn(1, 21, 3))
    angles = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0])
    many = rotate(points.repeat(5, 1, 1), torch.cos(angles), torch.sin(angles))
    out = upright(many.reshape(5, FEATURES)).reshape(5, 21, 3)
    assert torch.allclose(out[:, 9, 0], torch.zeros(5), atol=1e-5)  # middle knuckle above
    assert (out[:, 9, 1] < 0).all()
    assert torch.allclose(out, out[:1].expand_as(out), atol=1e-5)


def test_tta_is_the_bare_model_in_training_and_a_mean_of_turns_in_eval() -> None:
    torch.manual_seed(0)
    mlp = LandmarkMLP(29).eval()
    tta = InPlaneTTA(mlp, degrees=(0.0,))
    rows = random_rows()[4:, :FEATURES]
    assert torch.allclose(tta(rows), mlp(rows), atol=1e-6)  # one angle of 0: the model
    tta = InPlaneTTA(mlp).train()
    mlp.eval()  # the wrapper in training mode, its model without dropout
    assert torch.equal(tta(rows), mlp(rows))
    tta.eval()
    assert not torch.allclose(tta(rows), mlp(rows), atol=1e-4)  # three turns, averaged


@pytest.mark.parametrize(
    "mlp",
    [
        LandmarkMLP(29, derived=True),
        InPlaneTTA(LandmarkMLP(29, derived=True)),
        nn.Sequential(Upright(), LandmarkMLP(29)),
    ],
    ids=["derived", "derived+tta", "upright"],
)
def test_derived_graphs_export_with_the_served_contract_and_match_torch(mlp, tmp_path) -> None:
    torch.manual_seed(1)
    net = LandmarkNet(29, 28, mlp=mlp).eval()
    path = export_onnx(net, tmp_path / "model.onnx", image_size=0, num_classes=29)
    rows = random_rows(32)
    spec = contract(net)
    (probs,) = onnx_session(path).run([LANDMARK_OUTPUT], spec.feeds(rows))
    with torch.no_grad():
        expected = spec.module(*spec.split(rows)).numpy()
    assert probs.shape == (32, 29)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert (probs[:8, 28] == 1.0).all()  # no hand: 'nothing', as before
    inputs = [i.name for i in onnx_session(path).get_inputs()]
    assert inputs == list(spec.inputs) and len(spec.inputs) == 2


def test_tilt_turns_hands_out_of_the_plane_and_is_on_by_default() -> None:
    from asl_recognition.training.landmark_model import LandmarkAugment

    assert LandmarkAugment().tilt == 15.0  # the leave-one-source-out folds chose it
    rows = random_rows(16)[4:, :FEATURES]
    torch.manual_seed(3)
    off = LandmarkAugment(tilt=0.0)(rows)
    torch.manual_seed(3)
    assert not torch.allclose(LandmarkAugment()(rows), off, atol=1e-3)
    flat = renormalise(open_hand()).repeat(64, 1, 1)  # z = 0: a hand facing the camera
    turned = LandmarkAugment(tilt=40.0)._tilt(flat)
    assert turned[:, :, 2].abs().amax() > 0.1  # now it has depth ...
    lengths = turned.norm(dim=2)
    assert torch.allclose(lengths, flat.norm(dim=2), atol=1e-5)  # ... and the same bone lengths
    assert torch.allclose(turned[:, 0], torch.zeros(64, 3))  # turned about the wrist

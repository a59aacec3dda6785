"""The landmark augmentation: in-plane turns and the out-of-plane tilt keep a hand a hand (bone
lengths, the wrist), and the tilt the leave-one-source-out folds chose is on by default."""

from __future__ import annotations

import math

import torch

from asl_recognition.training.landmark_model import (
    FEATURES,
    LandmarkAugment,
    renormalise,
    rotate,
)


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


def test_tilt_turns_hands_out_of_the_plane_and_is_on_by_default() -> None:
    assert LandmarkAugment().tilt == 30.0  # the leave-one-source-out folds chose it
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


def test_an_in_plane_turn_keeps_lengths_and_a_full_turn_is_the_identity() -> None:
    hands = renormalise(open_hand().repeat(4, 1, 1) + 0.05 * torch.randn(4, 21, 3))
    angle = torch.tensor([0.3, -1.0, math.pi / 2, 2 * math.pi])
    turned = rotate(hands, torch.cos(angle), torch.sin(angle))
    assert torch.allclose(turned.norm(dim=2), hands.norm(dim=2), atol=1e-5)
    assert torch.allclose(turned[3], hands[3], atol=1e-5)
    assert torch.allclose(turned[2, :, 0], -hands[2, :, 1], atol=1e-5)  # a quarter turn

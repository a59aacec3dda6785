"""Features derived from the 21 hand points inside the model, so the served contract stays 63.

The confusable letters differ in a few relations the raw points carry only implicitly: how far
each finger is curled (A/E/S/M/N/T, U/R/V), which fingertips touch (R: crossed index and middle;
O/C), and where the thumb tip sits between the index, middle and ring knuckles (M/N/S/T/A/E).
Computing them here, from the 63 features, keeps the ONNX graph's inputs (features[N,63],
hand_found[N,1]) and the served path unchanged. Every op is plain tensor arithmetic (no acos,
no gather by data) so the graph exports to the project's opset.
"""

from __future__ import annotations

import math

import torch
from torch import nn

POINTS = 21
# each finger's chain from the wrist (0): thumb 1-4, index 5-8, middle 9-12, ring 13-16,
# pinky 17-20
CHAINS = tuple((0, b, b + 1, b + 2, b + 3) for b in (1, 5, 9, 13, 17))
TIPS = (4, 8, 12, 16, 20)
THUMB_TIP, KNUCKLES = 4, (5, 9, 13)  # the thumb tip against the index, middle, ring MCP joints
TIP_PAIRS = tuple((a, b) for i, a in enumerate(TIPS) for b in TIPS[i + 1 :])


def _joints() -> tuple[list[int], list[int], list[int]]:
    """(before, at, after) point indices of each finger's three bends (15 in all)."""
    before, at, after = [], [], []
    for chain in CHAINS:
        for i in range(1, 4):
            before.append(chain[i - 1])
            at.append(chain[i])
            after.append(chain[i + 1])
    return before, at, after


JOINTS = _joints()
DERIVED = len(JOINTS[1]) + len(TIP_PAIRS) + 3 * len(KNUCKLES)


def joint_cosines(points: torch.Tensor) -> torch.Tensor:
    """(N, 15): cosine of the bend at every finger joint (1 = straight, -1 = folded back)."""
    before, at, after = (list(index) for index in JOINTS)
    incoming = points[:, at] - points[:, before]
    outgoing = points[:, after] - points[:, at]
    dot = (incoming * outgoing).sum(dim=2)
    norms = incoming.norm(dim=2) * outgoing.norm(dim=2)
    return dot / norms.clamp_min(1e-6)


def tip_distances(points: torch.Tensor) -> torch.Tensor:
    """(N, 10): distance between every pair of fingertips (points are scale-normalised)."""
    first = [a for a, _ in TIP_PAIRS]
    second = [b for _, b in TIP_PAIRS]
    return (points[:, first] - points[:, second]).norm(dim=2)


def thumb_offsets(points: torch.Tensor) -> torch.Tensor:
    """(N, 9): the thumb tip's offset from the index, middle and ring knuckles (x, y, z)."""
    return (points[:, THUMB_TIP : THUMB_TIP + 1] - points[:, list(KNUCKLES)]).reshape(-1, 9)


class DerivedFeatures(nn.Module):
    """63 features -> 63 + 34: the points, joint bends, fingertip distances, thumb offsets."""

    out_features = 3 * POINTS + DERIVED

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        points = features.reshape(-1, POINTS, 3)
        return torch.cat(
            [features, joint_cosines(points), tip_distances(points), thumb_offsets(points)], 1
        )


def renormalise(points: torch.Tensor) -> torch.Tensor:
    """(N, 21, 3) wrist-relative points divided again by their largest |x|, |y|."""
    points = points - points[:, :1]
    scale = points[:, :, :2].abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    return points / scale


def rotate(points: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(N, 21, 3) points rotated in the image plane by the per-row angle given as cos, sin (N,)."""
    cos, sin = cos[:, None], sin[:, None]
    x, y = points[:, :, 0], points[:, :, 1]
    return torch.stack([cos * x - sin * y, sin * x + cos * y, points[:, :, 2]], dim=2)


class InPlaneTTA(nn.Module):
    """Test-time augmentation: the mean of ``model``'s logits over small in-plane rotations.

    Training sees random rotations (``LandmarkAugment``); at evaluation the same model is asked
    about the row turned by each of ``degrees`` and the answers averaged, so one tilted photo
    is judged from a few nearby angles. In training mode it is the bare model.
    """

    def __init__(self, model: nn.Module, degrees: tuple[float, ...] = (-10.0, 0.0, 10.0)):
        super().__init__()
        self.model = model
        self.angles = tuple(math.radians(d) for d in degrees)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.model(features)
        points = features.reshape(-1, POINTS, 3)
        ones = torch.ones_like(points[:, 0, 0])
        total = None
        for angle in self.angles:
            turned = rotate(points, ones * math.cos(angle), ones * math.sin(angle))
            logits = self.model(renormalise(turned).reshape(-1, 3 * POINTS))
            total = logits if total is None else total + logits
        return total / len(self.angles)


def upright(features: torch.Tensor) -> torch.Tensor:
    """Palm-orientation normalisation: turn each hand so wrist -> middle knuckle points up."""
    points = features.reshape(-1, POINTS, 3)
    axis = points[:, 9, :2] - points[:, 0, :2]
    length = axis.norm(dim=1).clamp_min(1e-6)
    # the angle that takes (ax, ay) to (0, -1) (image y grows downwards): cos = -ay, sin = ax
    # over the length, for the rotation [cos -sin; sin cos]
    cos, sin = -axis[:, 1] / length, -axis[:, 0] / length
    return renormalise(rotate(points, cos, sin)).reshape(-1, 3 * POINTS)


class Upright(nn.Module):
    """:func:`upright` as a module, placed in front of the classifier."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return upright(features)

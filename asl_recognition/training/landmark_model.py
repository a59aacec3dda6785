"""The landmark classifier: an MLP on the 63 hand-landmark features, and its served graph.

The features (``hands.features_from_landmarks``) are wrist-relative, scale-normalised and
mirrored for left hands, so the model sees the hand's shape, not the camera, the background or
the skin. Augmentation happens in that space (:class:`LandmarkAugment`). The exported graph takes
the features plus a ``hand_found`` flag and answers ``nothing`` with certainty when no hand was
found, so the served ensemble needs no branch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asl_recognition.hands.landmarker import FEATURE_COUNT

FEATURES = FEATURE_COUNT  # the hand step's 63: 21 points x (x, y, z)
__all__ = ["FEATURES", "LandmarkMLP", "LandmarkAugment", "LandmarkNet", "renormalise"]


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


class LandmarkMLP(nn.Module):
    """63 -> 256 -> 128 -> classes, with LayerNorm and dropout (small data, small model).

    Tried and not kept, measured leave-one-source-out (docs/results.md; the code is in commit
    8760716): derived features (joint bends, fingertip distances, thumb offsets), a palm-upright
    rotation, a wider net, test-time turns and a 3-seed ensemble; later a graph network over the
    hand's bones and a transformer over the 21 points (no better on the held-out sources).
    """

    def __init__(
        self, num_classes: int, hidden: tuple[int, int] = (256, 128), dropout: float = 0.2
    ):
        super().__init__()
        first, second = hidden
        self.net = nn.Sequential(
            nn.Linear(FEATURES, first),
            nn.LayerNorm(first),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(first, second),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(second, num_classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class LandmarkAugment(nn.Module):
    """Random in-plane rotation, anisotropic scale, jitter and a rare mirror, then renormalise.

    Rotation and x/y scale stand for other camera angles and distances; jitter for landmark
    noise; the mirror (x negated, as a wrong handedness would do) for the detector's handedness
    errors. ``tilt`` (degrees, 0 = off) turns the hand out of the image plane about the x and y
    axes with the landmarks' depth, as a camera above, below or beside the hand would see it.
    On four sources 15 degrees raised the leave-one-source-out Roboflow fold by 2.4 points over
    two seeds (25 and 40 cost the webcam set 3-5); with ASL-HG's ten signers among them, 30
    raised Roboflow on every seed (+1.3 over three) and the webcam set by 1.4 (docs/results.md).
    Applied to training batches only.
    """

    def __init__(
        self,
        degrees: float = 15.0,
        stretch: float = 0.1,
        jitter: float = 0.02,
        mirror_p: float = 0.05,
        tilt: float = 30.0,
    ) -> None:
        super().__init__()
        self.degrees, self.stretch, self.jitter, self.mirror_p = degrees, stretch, jitter, mirror_p
        self.tilt = tilt

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n = features.shape[0]
        points = features.reshape(n, 21, 3).clone()
        if self.tilt > 0:
            points = self._tilt(points)
        angle = (torch.rand(n, device=points.device) * 2 - 1) * math.radians(self.degrees)
        points = rotate(points, torch.cos(angle), torch.sin(angle))
        stretch = 1 + (torch.rand(n, 1, 2, device=points.device) * 2 - 1) * self.stretch
        points[:, :, :2] = points[:, :, :2] * stretch
        points = points + torch.randn_like(points) * self.jitter
        mirror = torch.rand(n, device=points.device) < self.mirror_p
        points[mirror, :, 0] = -points[mirror, :, 0]
        return renormalise(points).reshape(n, FEATURES)

    def _tilt(self, points: torch.Tensor) -> torch.Tensor:
        """Each hand turned by up to ``tilt`` degrees about the x axis, then about the y axis."""
        n = points.shape[0]
        pitch, yaw = ((torch.rand(2, n) * 2 - 1) * math.radians(self.tilt)).to(points.device)
        x, y, z = points.unbind(dim=2)
        cos, sin = torch.cos(pitch)[:, None], torch.sin(pitch)[:, None]
        y, z = cos * y - sin * z, sin * y + cos * z
        cos, sin = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
        x, z = cos * x + sin * z, -sin * x + cos * z
        return torch.stack([x, y, z], dim=2)


class ServedLandmarkModel(nn.Module):
    """The exported contract: (features [N, 63], hand_found [N, 1]) -> probabilities [N, C].

    Rows without a hand get probability 1 for ``nothing``: no guess is made from zeros.
    """

    def __init__(self, model: nn.Module, num_classes: int, nothing_index: int) -> None:
        super().__init__()
        self.model = model
        nothing = torch.zeros(1, num_classes)
        nothing[0, nothing_index] = 1.0
        self.register_buffer("nothing", nothing)

    def forward(self, features: torch.Tensor, hand_found: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.model(features), dim=1)
        found = hand_found.to(probs.dtype).reshape(-1, 1)
        return found * probs + (1 - found) * self.nothing


class LandmarkNet(nn.Module):
    """Training/evaluation view: rows of [63 features, hand_found] -> logits.

    Rows without a hand get a fixed, certain ``nothing`` (as the served graph answers), so
    every evaluation counts a missed hand exactly as serving would; those rows carry no
    gradient and are left out of the train split.
    """

    num_classes: int

    def __init__(self, num_classes: int, nothing_index: int, mlp: nn.Module | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.mlp = mlp if mlp is not None else LandmarkMLP(num_classes)
        nothing = torch.full((1, num_classes), -30.0)
        nothing[0, nothing_index] = 30.0
        self.register_buffer("nothing_logits", nothing)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        features, found = rows[:, :FEATURES], rows[:, FEATURES:].clamp(0, 1)
        return found * self.mlp(features) + (1 - found) * self.nothing_logits

    def served(self) -> ServedLandmarkModel:
        index = int(self.nothing_logits.argmax())
        return ServedLandmarkModel(self.mlp, self.num_classes, index)


class RowsAugment(nn.Module):
    """:class:`LandmarkAugment` on a batch of rows [N, 63 features + hand_found], in one call.

    Rows without a hand keep their zeros (renormalising zeros would blow the jitter up), and
    their flag column is never touched. The whole batch is one set of tensor ops: applied row
    by row it cost more than the MLP's own step.
    """

    def __init__(self, augment: LandmarkAugment | None = None) -> None:
        super().__init__()
        self.augment = augment or LandmarkAugment()

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        found = rows[:, FEATURES] > 0
        out = rows.clone()
        if bool(found.any()):
            out[found, :FEATURES] = self.augment(rows[found, :FEATURES])
        return out

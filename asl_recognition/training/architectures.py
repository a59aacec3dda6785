"""The architectures ``--model`` chooses from: one registry, whose keys are the option's choices.

Each entry says what the network reads (photos or hand-landmark rows) and builds its untrained
network for a class count: for an image model the backbone that ``models.ASLClassifier`` wraps
with the fixed preprocessing, for the landmark model the MLP that ``LandmarkNet`` wraps with its
certain ``nothing`` for rows without a hand. No weights are ever downloaded.

Importing this module imports no torch (the builders do, when called): the option declarations
read the keys, and the pipeline's enqueue job reads those without torch installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import nn

IMAGES, LANDMARKS = "images", "landmarks"


@dataclass(frozen=True)
class Architecture:
    """One ``--model`` choice: what it reads (IMAGES or LANDMARKS) and its network builder."""

    reads: str
    build: Callable[[int], "nn.Module"]


def _cnn(num_classes: int) -> "nn.Module":
    from asl_recognition.training.models import small_cnn

    return small_cnn(num_classes)


def _resnet18(num_classes: int) -> "nn.Module":
    from torchvision import models

    return models.resnet18(weights=None, num_classes=num_classes)


def _mobilenet_v3_small(num_classes: int) -> "nn.Module":
    from torchvision import models

    return models.mobilenet_v3_small(weights=None, num_classes=num_classes)


def _landmark_mlp(num_classes: int) -> "nn.Module":
    from asl_recognition.training.landmark_model import LandmarkMLP

    return LandmarkMLP(num_classes)


ARCHITECTURES: dict[str, Architecture] = {
    "cnn": Architecture(IMAGES, _cnn),
    "resnet18": Architecture(IMAGES, _resnet18),
    "mobilenet_v3_small": Architecture(IMAGES, _mobilenet_v3_small),
    # an MLP on the 63 hand-landmark features (ASL_landmarks), not on pixels
    "landmarks": Architecture(LANDMARKS, _landmark_mlp),
}


def reads_images(name: str | None) -> bool:
    """Whether ``name`` is a registered architecture that reads photos (an unknown name: no)."""
    arch = ARCHITECTURES.get(name or "")
    return arch is not None and arch.reads == IMAGES

"""transforms.v2 augmentation presets on uint8 CHW tensors.

No horizontal flip anywhere: ASL handshapes are not mirror-symmetric (a flipped J or Z is another
sign, and handedness is part of the data).
"""

from __future__ import annotations

from torch import nn
from torchvision.transforms import v2

from asl_recognition.training.options import AUGMENT_PRESETS


def build_augment(preset: str, image_size: int) -> nn.Module | None:
    """The per-sample train-time transform for ``preset`` (None for ``none``)."""
    if preset == "none":
        return None
    if preset == "light":
        return v2.Compose(
            [
                v2.RandomResizedCrop(
                    image_size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True
                ),
                v2.RandomRotation(10),
                v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            ]
        )
    if preset == "strong":
        return v2.Compose(
            [
                v2.RandomResizedCrop(
                    image_size, scale=(0.6, 1.0), ratio=(0.8, 1.25), antialias=True
                ),
                v2.RandomRotation(15),
                v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05),
                v2.RandomGrayscale(p=0.1),
                v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2),
            ]
        )
    if preset == "generalise":
        # Against the shortcuts one signer and one room teach: colour and lighting (strong
        # jitter, grayscale, channel order), framing (crop, perspective), focus (blur) and
        # background clutter or occlusion (random erasing).
        return v2.Compose(
            [
                v2.RandomResizedCrop(
                    image_size, scale=(0.5, 1.0), ratio=(0.75, 1.33), antialias=True
                ),
                v2.RandomApply([v2.RandomPerspective(0.3, p=1.0)], p=0.4),
                v2.RandomRotation(20),
                v2.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.6, hue=0.1),
                v2.RandomApply([v2.RandomChannelPermutation()], p=0.2),
                v2.RandomGrayscale(p=0.3),
                v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=0.3),
                v2.RandomErasing(p=0.5, scale=(0.02, 0.15), value=0),
            ]
        )
    choices = ", ".join(AUGMENT_PRESETS)
    raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {choices}")

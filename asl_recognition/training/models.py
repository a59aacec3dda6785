"""Image classifiers: a small baseline CNN and the wrapper every image backbone runs in.

The backbones are chosen from ``architectures.ARCHITECTURES``; all take uint8 NCHW images.

Normalisation lives inside the module (``Preprocess``) so the exported ONNX graph, training and
every client apply exactly the same arithmetic. No weights are ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from asl_recognition.image_size import check_image_size
from asl_recognition.training.architectures import ARCHITECTURES, reads_images
from asl_recognition.training.errors import TrainingInputError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Preprocess(nn.Module):
    """uint8 [N,3,H,W] -> float, scaled to [0,1], normalised with ImageNet statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32) / 255.0
        return (x - self.mean) / self.std


class ASLClassifier(nn.Module):
    """Preprocess + backbone; returns logits (training) - see ``ProbabilityModel`` for export."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.preprocess = Preprocess()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(images))


class ProbabilityModel(nn.Module):
    """The exported contract: uint8 images in, softmax probabilities out."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(images), dim=1)


def small_cnn(num_classes: int, widths: tuple[int, ...] = (24, 48, 96, 192)) -> nn.Module:
    """A stride-2 stem then three conv blocks (each halves the side).

    ~225k parameters, ~25 M MACs at 64 px: trains at a few hundred images/s on 2 CPU cores.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    cin = widths[0]
    for cout in widths[1:]:
        layers += [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        cin = cout
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(cin, num_classes),
    )


def _backbone(name: str, num_classes: int) -> nn.Module:
    if not reads_images(name):
        images = [key for key in ARCHITECTURES if reads_images(key)]
        raise TrainingInputError(
            f"{name!r} is not an image model; choose one of {', '.join(images)}"
        )
    return ARCHITECTURES[name].build(num_classes)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a torchvision-style state dict or of one of our checkpoints."""
    path = Path(path)
    if not path.is_file():
        raise TrainingInputError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        # torch's own text suggests weights_only=False, which would run pickled code: not here
        raise TrainingInputError(
            f"weights file {path} is not a torch state dict ({type(exc).__name__}: it must "
            "hold tensors only, loaded with torch.load(weights_only=True))"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TrainingInputError(f"weights file {path} does not hold a state dict of tensors")
    # our checkpoints hold the whole classifier: its fixed preprocessing, then the backbone
    return {
        k.removeprefix("backbone."): v for k, v in state.items() if not k.startswith("preprocess.")
    }


def head_keys(backbone: nn.Module) -> set[str]:
    """State-dict keys of the last linear layer: the class head, sized by the class count."""
    linear = [name for name, m in backbone.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        return set()
    return {f"{linear[-1]}.{key}" for key in backbone.get_submodule(linear[-1]).state_dict()}


def load_weights(
    backbone: nn.Module, path: str | Path, name: str = "the model", prefix: str = ""
) -> int:
    """Load a local state dict made for this architecture; returns the tensors loaded.

    Only the class head may differ (a file trained on another class count starts every other
    layer); a file with any other missing, unknown or differently shaped tensor is refused, so
    weights of another architecture never half-load silently. ``prefix``: where ``backbone``
    sits in a checkpoint's model (the landmark net's ``mlp.``), for files that hold it whole.
    """
    state = read_state_dict(path)
    if prefix and any(key.startswith(prefix) for key in state):
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    own = backbone.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in fits and k not in head_keys(backbone)]
    unknown = [k for k in state if k not in own]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} of its {len(own)} tensors missing or shaped differently "
                f"(first: {missing[0]})"
            )
        if unknown:
            problems.append(f"{len(unknown)} tensors it does not have (first: {unknown[0]})")
        raise TrainingInputError(
            f"weights file {path} does not match the {name} architecture: " + ", ".join(problems)
        )
    backbone.load_state_dict(fits, strict=False)
    return len(fits)


def build_model(
    name: str, num_classes: int, image_size: int, weights: str | Path | None = None
) -> ASLClassifier:
    """A classifier for ``num_classes`` checked to run at ``image_size``."""
    check_image_size(image_size, name, error=TrainingInputError)
    backbone = _backbone(name, num_classes)
    if weights:
        load_weights(backbone, weights, name)
    model = ASLClassifier(backbone)
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8))
    except RuntimeError as exc:
        raise TrainingInputError(f"{name} cannot run at {image_size} px: {exc}") from exc
    if tuple(out.shape) != (2, num_classes):
        raise TrainingInputError(f"{name} produced shape {tuple(out.shape)} at {image_size} px")
    model.train()
    return model

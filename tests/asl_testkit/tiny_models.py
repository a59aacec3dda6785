"""Tiny real image and landmark models, trained here in seconds and exported to ONNX.

The image models are trained for a few steps on the bundled real images (data/sample) and
exported exactly as the model contract says (uint8 NCHW ``images`` -> softmax
``probabilities``), so serving and monitoring tests do not depend on the training pipeline,
yet exercise genuinely different models (image size, classes, architecture).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.paths import SAMPLE_DATA

MEAN = (0.5, 0.5, 0.5)


STD = (0.25, 0.25, 0.25)


SUBSET = ["A", "B", "C", "L", "Y"]


@dataclass
class TinyModel:
    onnx: Path
    classes: Path
    image_size: int
    class_names: list[str]


def load_images(classes: list[str], size: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for index, name in enumerate(classes):
        for path in sorted((SAMPLE_DATA / name).glob("*.jpg"))[:per_class]:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
            xs.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            ys.append(index)
    return np.stack(xs), np.asarray(ys)


def fit(model, x, y, steps: int, batch: int, lr: float = 3e-3) -> None:
    """Adam on random batches of (x, y); the model outputs probabilities. Leaves it in eval."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,))
        loss = torch.nn.functional.nll_loss(torch.log(model(x[idx]) + 1e-8), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def export_images_model(model, image_size: int, onnx_path: Path) -> None:
    """The serving contract: uint8 NCHW ``images`` -> ``probabilities``, dynamic batch."""
    import torch

    with warnings.catch_warnings():  # dynamo=False is the documented one-file exporter here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8),),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
        )


def train_and_export(
    out_dir: Path, classes: list[str], image_size: int, arch: str, seed: int, steps: int = 40
) -> TinyModel:
    """A few Adam steps, then uint8 NCHW -> normalise -> net -> softmax exported to ONNX."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    n = len(classes)
    if arch == "cnn":
        body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, n),
        )
    else:  # a different architecture: MLP on a 4x downsampled image
        body = nn.Sequential(
            nn.AvgPool2d(4),
            nn.Flatten(),
            nn.Linear(3 * (image_size // 4) ** 2, 32),
            nn.ReLU(),
            nn.Linear(32, n),
        )

    class Served(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255.0)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.body((images.float() - self.mean) / self.std), dim=1)

    model = Served()
    xs, ys = load_images(classes, image_size, per_class=8)
    fit(model, torch.from_numpy(xs), torch.from_numpy(ys), steps, batch=32)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, classes_path = out_dir / "model.onnx", out_dir / "classes.txt"
    export_images_model(model, image_size, onnx_path)
    write_class_file(str(classes_path), classes)
    return TinyModel(onnx_path, classes_path, image_size, list(classes))


class LazyModels(dict):
    """Train each tiny model on first use, so a test run trains only the models it needs."""

    SPECS = {
        "a": (list(CLASSES), 32, "cnn", 0),  # 29 classes, 32 px CNN
        "a2": (list(CLASSES), 32, "cnn", 1),  # same signature as a, other weights
        "b": (SUBSET, 48, "mlp", 2),  # 5 classes, 48 px, another architecture
    }

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, key: str) -> TinyModel:
        classes, size, arch, seed = self.SPECS[key]
        self[key] = train_and_export(self.root / key, classes, size, arch, seed=seed)
        return self[key]


def export_landmark_classifier(
    out_dir: Path, features=None, labels=None, seed: int = 0, detector: dict | None = None
) -> Path:
    """A real landmark classifier ONNX (the training contract: FEATURES, HAND_FOUND -> PROBS).

    ``features``/``labels`` given: the MLP is fitted on them for a few hundred steps, so the
    served answer for those photos is known. Exported by the training stage's own export;
    ``detector``: hand detector settings recorded in it, as a training run records its table's.
    """
    import torch

    from asl_recognition.classes import CLASSES, write_class_file
    from asl_recognition.hands.landmarker import DETECTOR_METADATA_KEY
    from asl_recognition.training.export import export_onnx
    from asl_recognition.training.landmark_model import LandmarkNet

    torch.manual_seed(seed)
    net = LandmarkNet(len(CLASSES), CLASSES.index("nothing"))
    if features is not None:
        x, y = torch.as_tensor(features), torch.as_tensor(labels)
        optimiser = torch.optim.Adam(net.mlp.parameters(), lr=1e-2)
        for _ in range(200):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net.mlp(x), y).backward()
            optimiser.step()
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {DETECTOR_METADATA_KEY: json.dumps(detector)} if detector is not None else None
    path = export_onnx(net.eval(), out_dir / "model.onnx", 0, len(CLASSES), metadata)
    write_class_file(str(out_dir / "classes.txt"), CLASSES)
    return path


def contract_onnx(path: Path, num_classes: int = len(CLASSES)) -> Path:
    """The smallest graph the serving contract accepts, uint8 ``images`` [N,3,2,2] ->
    ``probabilities`` [N,C]: registry records that select_best may promote (it refuses a model
    no Triton repository can be built from)."""
    import onnx
    from onnx import TensorProto, helper

    weights = helper.make_tensor(
        "w", TensorProto.FLOAT, [12, num_classes], [0.01] * 12 * num_classes
    )
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Flatten", ["f"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "contract",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 3, 2, 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", num_classes])],
        initializer=[weights],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path

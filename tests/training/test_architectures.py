"""The architecture registry: its keys are ``--model``'s choices, each entry builds its network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from asl_recognition.paths import REPO_ROOT
from asl_recognition.training.architectures import ARCHITECTURES, IMAGES, LANDMARKS, reads_images
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.landmark_model import LandmarkMLP
from asl_recognition.training.landmark_run import build_landmark_net
from asl_recognition.training.models import build_model
from asl_recognition.training.options import TrainOptions


def test_the_registry_keys_are_the_model_choices() -> None:
    """One list of names: a new entry is a new ``--model`` choice, nothing else to edit."""
    choices = TrainOptions.__dataclass_fields__["model"].metadata["choices"]
    assert choices == tuple(ARCHITECTURES)
    assert {arch.reads for arch in ARCHITECTURES.values()} == {IMAGES, LANDMARKS}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_each_entry_builds_a_network_with_one_output_per_class(name: str) -> None:
    net = ARCHITECTURES[name].build(7)
    assert isinstance(net, nn.Module)
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    assert last.out_features == 7


def test_build_model_takes_image_models_only() -> None:
    """The landmark MLP reads 63 features: building it as an image classifier is refused."""
    assert not reads_images("landmarks") and not reads_images(None)
    assert reads_images("cnn")
    with pytest.raises(TrainingInputError):
        build_model("landmarks", 5, 64)


def test_the_landmark_net_wraps_the_registered_mlp() -> None:
    net = build_landmark_net(["A", "B", "nothing"], None)
    assert isinstance(net.mlp, LandmarkMLP)


def test_the_option_declarations_import_no_torch() -> None:
    """The pipeline's enqueue job reads the choices in an environment without torch."""
    code = (
        "import sys, asl_recognition.training.options\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "assert not heavy, heavy"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("name", ["cnn", "landmarks", "vgg"])
def test_predict_rebuilds_only_image_checkpoints(name: str, tmp_path: Path) -> None:
    """``optimize.predict.torch_model`` asks the registry which checkpoints hold photos models."""
    from asl_recognition.optimize.predict import PredictError, torch_model

    classes = ["A", "B", "nothing"]
    state = build_model("cnn", len(classes), 32).state_dict()
    checkpoint = tmp_path / "best.pt"
    torch.save(
        {"model": state, "model_name": name, "classes": classes, "image_size": 32}, checkpoint
    )
    if name == "cnn":
        model, names, size = torch_model(checkpoint)
        assert names == classes and size == 32
        probs = model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
        assert probs.shape == (1, 3) and float(probs.sum()) == pytest.approx(1.0)
    else:
        with pytest.raises(PredictError, match="landmark classifier|not an image classifier"):
            torch_model(checkpoint)

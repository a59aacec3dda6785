"""``--weights`` for the landmark model takes what this project writes: a run's ``best.pt`` or
``last.pt``, or a bare state dict of the net or its MLP. Before, only a bare state dict of the
whole net loaded, and a checkpoint was refused with the one line "Error(s) in loading state_dict
for LandmarkNet:" (its reasons were on the lines cut off)."""

from __future__ import annotations

import pytest
import torch
from asl_testkit.files import assert_one_line
from asl_testkit.published import train_options

from asl_recognition.classes import CLASSES
from asl_recognition.training.data import TensorSplit
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.landmark_model import FEATURES
from asl_recognition.training.landmark_run import build_landmark_net
from asl_recognition.training.loop import LoopConfig, Trainer
from asl_recognition.training.models import build_model


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The checkpoints the real loop writes after one epoch on rows of found hands."""
    run_dir = tmp_path_factory.mktemp("run")
    generator = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.randn(58, FEATURES, generator=generator), torch.ones(58, 1)], 1)
    split = TensorSplit(rows, torch.arange(58) % len(CLASSES))
    config = LoopConfig.from_options(train_options(model="landmarks", epochs=1), progress=False)
    net = build_landmark_net(list(CLASSES), None)
    Trainer(net, split, split, CLASSES, config, run_dir).fit()
    return run_dir / "checkpoints"


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_a_checkpoint_of_this_project_starts_the_net(trained_run, name) -> None:
    saved = torch.load(trained_run / name, weights_only=True)["model"]
    net = build_landmark_net(list(CLASSES), str(trained_run / name))
    for key, tensor in net.state_dict().items():
        assert torch.equal(tensor, saved[key]), key


def test_a_bare_state_dict_of_the_mlp_starts_the_net(trained_run, tmp_path) -> None:
    saved = torch.load(trained_run / "best.pt", weights_only=True)["model"]
    bare = tmp_path / "mlp.pt"
    torch.save(
        {k.removeprefix("mlp."): v for k, v in saved.items() if k != "nothing_logits"}, bare
    )
    net = build_landmark_net(list(CLASSES), str(bare))
    assert torch.equal(net.mlp.net[0].weight, saved["mlp.net.0.weight"])


def test_weights_of_another_architecture_are_one_line(tmp_path) -> None:
    cnn = tmp_path / "cnn.pt"
    torch.save(build_model("cnn", len(CLASSES), 32).state_dict(), cnn)
    with pytest.raises(TrainingInputError) as info:
        build_landmark_net(list(CLASSES), str(cnn))
    assert_one_line(str(info.value), "does not match the landmarks architecture", "first:")

"""Issue 7 training ingredients: source-balanced draws and the anti-shortcut augmentation."""

from __future__ import annotations

import pytest
import torch
from asl_testkit.published import train_options

from asl_recognition.training.augment import build_augment
from asl_recognition.training.data import TensorSplit, source_balanced_weights
from asl_recognition.training.loop import LoopConfig, Trainer
from asl_recognition.training.models import build_model


def _split(sources: list[str], labels: list[int]) -> tuple[dict, TensorSplit]:
    paths = [f"train/{lab}/{i}.jpg" for i, lab in enumerate(labels)]
    manifest = {
        "splits": {
            "train": [{"path": p, "data_source": s} for p, s in zip(paths, sources)],
        }
    }
    images = torch.zeros(len(labels), 3, 16, 16, dtype=torch.uint8)
    return manifest, TensorSplit(images, torch.tensor(labels), paths)


def test_every_source_class_cell_weighs_the_same() -> None:
    # 90 kaggle images of class 0, 10 massey images of class 0, 30 kaggle images of class 1
    sources = ["kaggle"] * 90 + ["massey"] * 10 + ["kaggle"] * 30
    labels = [0] * 100 + [1] * 30
    manifest, split = _split(sources, labels)
    w = source_balanced_weights(manifest, split)
    cells = {
        "kaggle/0": w[:90].sum(),
        "massey/0": w[90:100].sum(),
        "kaggle/1": w[100:].sum(),
    }
    for mass in cells.values():
        assert float(mass) == pytest.approx(float(cells["kaggle/0"]))


def test_balanced_draws_reach_the_small_source(tmp_path) -> None:
    sources = ["kaggle"] * 95 + ["massey"] * 5
    manifest, split = _split(sources, [0] * 100)
    for i in range(100):
        split.images[i] = i  # each image carries its own index
    val = TensorSplit(split.images[:4], split.labels[:4], split.paths[:4])

    def massey_share(weights: torch.Tensor | None) -> float:
        trainer = Trainer(
            build_model("cnn", 2, 16),
            split,
            val,
            ["a", "b"],
            LoopConfig.from_options(train_options(epochs=1, batch_size=50), progress=False),
            tmp_path / str(weights is None),
            sample_weights=weights,
        )
        drawn = [
            int(v)
            for epoch in range(1, 6)
            for images, _ in trainer.batches(epoch)
            for v in images[:, 0, 0, 0]
        ]
        return sum(v >= 95 for v in drawn) / len(drawn)

    # half the mass sits on the 5 massey images instead of their 5% share of the files
    assert 0.35 < massey_share(source_balanced_weights(manifest, split)) < 0.65
    assert massey_share(None) == 0.05  # a plain shuffle draws each image once per epoch


def test_generalise_preset_keeps_the_contract_and_never_flips() -> None:
    aug = build_augment("generalise", 32)
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, :8] = 255  # a bright band on the left edge
    torch.manual_seed(0)
    outs = [aug(image) for _ in range(40)]
    assert all(o.dtype == torch.uint8 and o.shape == (3, 32, 32) for o in outs)
    assert len({o.float().mean().item() for o in outs}) > 10  # it does vary the image
    names = {type(t).__name__ for t in aug.transforms}
    assert not any("Flip" in n for n in names)

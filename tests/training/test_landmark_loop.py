"""The landmark model's loop on real measured rows: whole-batch augmentation, one intra-op thread,
and only what each epoch needs (val for early stopping; the figures once, at the end).

Issue 20.1: ``make run``'s 150 epochs on 422 rows took ~230 s; 90% of it was a val confusion
matrix drawn by matplotlib every epoch, the rest the row-by-row augmentation on two threads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from asl_testkit.published import train_options

from asl_recognition.classes import CLASSES
from asl_recognition.paths import SAMPLE_DATA
from asl_recognition.training.data import TensorSplit
from asl_recognition.training.landmark_model import FEATURES, LandmarkAugment, RowsAugment
from asl_recognition.training.landmark_run import build_landmark_net, landmark_augment
from asl_recognition.training.loop import LoopConfig, Trainer
from asl_recognition.training.runtime import intra_op_threads

PHOTOS = {"A": 3, "B": 3, "L": 3, "nothing": 3}  # 'nothing' photos have no hand


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> TensorSplit:
    """Real rows: a few bundled photos measured by the serving landmarker."""
    pytest.importorskip("ai_edge_litert", reason="the hand landmark runtime is absent")
    from asl_recognition.hands import HandLandmarker, ensure_models
    from asl_recognition.training.landmark_data import measure_folder

    ensure_models()
    folder = tmp_path_factory.mktemp("photos")
    for cls, n in PHOTOS.items():
        (folder / cls).mkdir()
        for path in sorted((SAMPLE_DATA / cls).glob("*.jpg"))[:n]:
            shutil.copy(path, folder / cls / path.name)
    split = measure_folder(folder, CLASSES, HandLandmarker()).split
    found = split.images[:, FEATURES]
    assert 0 < int(found.sum()) < len(split)  # hands found, and rows without one
    return split


def test_batch_augmentation_changes_hand_rows_and_keeps_the_others(rows) -> None:
    torch.manual_seed(0)
    before = rows.images.clone()
    out = RowsAugment(LandmarkAugment())(rows.images)
    assert torch.equal(rows.images, before)  # the input batch is not modified in place
    hand = before[:, FEATURES] > 0
    assert out.shape == before.shape
    assert torch.equal(out[~hand], before[~hand])  # no hand: zeros and flag 0, untouched
    assert torch.equal(out[:, FEATURES], before[:, FEATURES])  # the flag column never moves
    changed = (out[hand, :FEATURES] - before[hand, :FEATURES]).abs().amax(dim=1)
    assert (changed > 1e-3).all()  # every hand row is moved
    points = out[hand, :FEATURES].reshape(-1, 21, 3)
    assert torch.allclose(points[:, 0], torch.zeros(3))  # still wrist-relative ...
    scale = points[:, :, :2].abs().amax(dim=(1, 2))
    assert torch.allclose(scale, torch.ones_like(scale))  # ... and scale-normalised


def test_only_hand_rows_in_a_batch_of_none_is_a_no_op(rows) -> None:
    empty = rows.images[rows.images[:, FEATURES] == 0]
    assert torch.equal(RowsAugment()(empty), empty)


def _trainer(rows: TensorSplit, run_dir: Path, **values) -> Trainer:
    options = train_options(model="landmarks", batch_size=4, **values)
    config = LoopConfig.from_options(options, progress=False)
    net = build_landmark_net(list(CLASSES), None)
    return Trainer(
        net, rows, rows, CLASSES, config, run_dir, batch_augment=landmark_augment("light")
    )


def test_the_loop_augments_whole_batches(rows, tmp_path) -> None:
    """One call per batch on the [B, 64] tensor (it was one call per row)."""
    trainer = _trainer(rows, tmp_path)
    seen: list[torch.Tensor] = []
    augment = trainer.batch_augment

    def recording(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch)
        return augment(batch)

    trainer.batch_augment = recording
    batches = list(trainer.batches(1))
    assert len(seen) == len(batches) == trainer.steps_per_epoch() == len(rows) // 4
    assert all(b.shape == (4, FEATURES + 1) for b in seen)
    drawn = torch.cat(seen)
    augmented = torch.cat([inputs for inputs, _ in batches])
    hand = drawn[:, FEATURES] > 0
    assert torch.equal(augmented[~hand], drawn[~hand])
    assert not torch.equal(augmented[hand], drawn[hand])
    assert trainer.transform is None  # no per-row hook left for landmarks


def test_fit_runs_on_the_configured_threads_and_restores_the_count(rows, tmp_path) -> None:
    trainer = _trainer(rows, tmp_path, epochs=2)
    trainer.cfg.threads = 1
    seen: list[int] = []
    augment = trainer.batch_augment

    def recording(batch: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return augment(batch)

    trainer.batch_augment = recording
    with intra_op_threads(2):
        trainer.fit()
        assert torch.get_num_threads() == 2
    assert seen and set(seen) == {1}


def test_figures_are_drawn_once_at_the_end_and_scalars_every_epoch(rows, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tb")) as writer:
        trainer = _trainer(rows, tmp_path / "run", epochs=4)
        trainer.log.writer = writer
        fit = trainer.fit()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("macro_f1/val")] == [1, 2, 3, 4]
    assert [e.step for e in events.Images("confusion_matrix/val")] == [4]
    # the checkpoints of the last epoch are on disk, best.pt that of the best val macro-F1
    last = torch.load(trainer.last_path, weights_only=False)
    best = torch.load(trainer.best_path, weights_only=False)
    assert last["epoch"] == 4 and len(last["history"]) == 4
    assert best["epoch"] == fit.best_epoch == last["best_epoch"]
    f1 = [row["val_macro_f1"] for row in fit.history]
    assert best["row"]["val_macro_f1"] == max(f1) == fit.best_val_macro_f1

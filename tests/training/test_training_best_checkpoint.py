"""``--resume`` checks ``best.pt`` as it checks ``last.pt``: a ``--keep best`` run exports it.

Real runs on real images (data/sample): a finished run is copied, its ``best.pt`` truncated or
replaced by one of another dataset, and the copy resumed for one more epoch.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from asl_testkit.files import assert_one_line, assert_untouched, fingerprint
from asl_testkit.published import publish_sample, train_options
from asl_testkit.workspaces import offline_workspace

from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.run import run_training

FAST = {"model": "cnn", "batch_size": 32, "augment": "none", "external": "none", "max_steps": 2}


@dataclass
class Finished:
    """A workspace with a published sample and one finished, registered run."""

    ws: Path
    dataset_id: str
    run: Path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    root = tmp_path_factory.mktemp("best")
    ws = root / "ws"
    with offline_workspace(ws):
        dataset_id = publish_sample(root)
        run = ws / "runs" / "finished"
        run_training(train_options(**FAST, epochs=1, output_dir=str(run)))
        yield Finished(ws, dataset_id, run)


def _resumed(finished: Finished, tmp_path: Path, change) -> str:
    """Resume a copy of the finished run, its best.pt changed by ``change``; the refusal."""
    run_dir = tmp_path / "copy"
    shutil.copytree(finished.run, run_dir, copy_function=shutil.copy2)
    checkpoints = run_dir / "checkpoints"
    change(checkpoints / "best.pt")
    kept = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    before = fingerprint(finished.ws)
    options = train_options(
        **FAST, dataset_version=finished.dataset_id, epochs=2, output_dir=str(run_dir), resume=True
    )
    with pytest.raises(TrainingInputError) as info:
        run_training(options)
    assert_untouched(finished.ws, before)  # no registry record
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == kept  # nothing trained
    return str(info.value)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _of_another_dataset(path: Path) -> None:
    best = torch.load(path, weights_only=True)
    torch.save({**best, "dataset_id": "0" * 32, "manifest_sha256": "1" * 64}, path)


def test_a_truncated_best_checkpoint_is_refused_before_training(finished, tmp_path) -> None:
    """Before: the resumed run trained, then ended in torch's traceback in load_best."""
    message = _resumed(finished, tmp_path, _truncate)
    assert_one_line(message, "best.pt is not a readable checkpoint")


def test_a_best_checkpoint_of_another_dataset_is_refused(finished, tmp_path) -> None:
    """Before: it was exported and registered as trained on this run's dataset."""
    message = _resumed(finished, tmp_path, _of_another_dataset)
    assert_one_line(message, "best.pt was trained with dataset", "not this run's best")

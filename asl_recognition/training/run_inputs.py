"""A training run's inputs: every option, dataset, weights and run-folder check (the
:class:`Plan`, made before anything is written), then the decoded splits (:class:`RunData`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asl_recognition.classes import CLASSES, read_class_file
from asl_recognition.image_size import check_image_size
from asl_recognition.locks import FileLock, holder
from asl_recognition.paths import workspace
from asl_recognition.training.checkpoints import (
    BEST,
    CHECKPOINT_DIR,
    LAST,
    RECIPE_OPTIONS,
    check_resumable,
    checkpoint_path,
)
from asl_recognition.training.data import (
    PublishedDataset,
    TensorSplit,
    check_classes,
    load_split,
    open_published,
)
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.landmark_run import (
    LANDMARK_MODEL,
    build_landmark_net,
    landmark_splits,
    open_landmarks,
)
from asl_recognition.training.models import build_model
from asl_recognition.training.options import TrainOptions, default_external
from asl_recognition.training.runtime import seed_everything

RUNS = "runs"
RUN_LOCK = ".train.lock"  # held by the run training in the folder (held_run_dir)
FALLBACK_IMAGE_SIZE = 64  # a dataset that does not say its size


@dataclass
class Plan:
    """A run's checked inputs: nothing has been written when one exists."""

    options: TrainOptions
    device: str
    dataset: PublishedDataset
    image_size: int
    external: str | None
    model: nn.Module  # ASLClassifier, or LandmarkNet for --model landmarks
    run_dir: Path
    meta: dict[str, Any]  # kept in every checkpoint: architecture, size, classes, dataset
    checkpoint: dict[str, Any] | None  # --resume: the checked last.pt
    landmarks: Any = None  # --model landmarks: the ASL_landmarks table of ``dataset``

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def start_epoch(self) -> int:
        return int(self.checkpoint["epoch"]) if self.checkpoint else 0


@dataclass
class RunData:
    """The decoded splits of the dataset version (holdout only when it has one)."""

    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    holdout: TensorSplit | None

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def prepare(options: TrainOptions) -> Plan:
    """Check the options against the machine, the dataset, the weights and the run folder."""
    device = training_device(options.device)
    dataset = open_published(options.dataset_version)
    source = options.classes or "the project's class list"
    check_classes(dataset.classes, expected_classes(options.classes), source)
    seed_everything(options.seed)  # before the model's random initialisation
    landmarks, identity = None, dataset.identity()
    if options.model == LANDMARK_MODEL:
        image_size = 0  # the model reads landmarks, not pixels
        landmarks, landmark_meta = open_landmarks(
            options.landmarks_version, dataset.version.id, dataset.classes
        )
        identity["landmarks_id"] = landmark_meta["id"]
        # The served hand step is rebuilt from these (the model carries them): no skew.
        identity["hand_detector"] = landmark_meta.get("detector")
        model = build_landmark_net(dataset.classes, options.weights)
    else:
        image_size = options.image_size or dataset.image_size or FALLBACK_IMAGE_SIZE
        check_image_size(image_size, options.model, error=TrainingInputError)
        model = build_model(options.model, len(dataset.classes), image_size, options.weights)
    run_dir = choose_run_dir(options.output_dir, options.model, options.resume)
    meta = {
        "model_name": options.model,
        "image_size": image_size,
        "classes": dataset.classes,
        **identity,
        "recipe": {key: getattr(options, key) for key in RECIPE_OPTIONS},
    }
    checkpoint = None
    if options.resume:
        last = checkpoint_path(run_dir, LAST)
        checkpoint = check_resumable(last, dataset.classes, meta, options.lr)
    external = None if options.external == "none" else (options.external or default_external())
    if external is not None and not Path(external).is_dir():  # was scored as "n/a", exit 0
        raise TrainingInputError(
            f"--external {external}: no such folder here (a folder of <CLASS>/* images, or "
            "none to skip the external check)"
        )
    return Plan(
        options, device, dataset, image_size, external, model, run_dir, meta, checkpoint, landmarks
    )


def training_device(name: str) -> str:
    """``auto`` picks CUDA when present; asking for CUDA without one is refused."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingInputError("--device cuda asked for, but no CUDA device is available")
    return name


def expected_classes(path: str | None) -> list[str]:
    """The class list a dataset must have: the ``--classes`` file, else the project's."""
    if not path:
        return list(CLASSES)
    try:
        return read_class_file(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise TrainingInputError(f"--classes {path}: {reason}") from exc


def _latest_run(model: str) -> Path | None:
    """The newest run of ``model`` that stopped before its run record (``metrics.json``) was
    written after its last checkpoint: a finished run had been picked, trained nothing and was
    registered a second time, while the interrupted run stayed where it was."""
    runs = sorted(
        (p.stat().st_mtime, p.parents[1])
        for p in (workspace() / RUNS).glob(f"train-{model}-*/{CHECKPOINT_DIR}/{LAST}")
    )
    for _, run_dir in reversed(runs):
        if not _finished(run_dir):
            return run_dir
    return None


def _finished(run_dir: Path) -> bool:
    """Whether the run record was written after ``last.pt``: by the epoch each names, not by
    their mtimes, which a copy that drops them (``cp -r``, ``rsync -r``) reorders: a copied
    workspace's finished run was taken for an interrupted one and registered again. The
    mtimes judge only a record or checkpoint that names no epoch."""
    record, last = run_dir / "metrics.json", checkpoint_path(run_dir, LAST)
    if not record.is_file():
        return False
    with contextlib.suppress(Exception):  # unreadable: judged by the mtimes below
        recorded = json.loads(record.read_text(encoding="utf-8")).get("epochs_run")
        saved = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("epoch")
        if isinstance(recorded, int) and isinstance(saved, int):
            return recorded == saved
    return record.stat().st_mtime >= last.stat().st_mtime


def choose_run_dir(output_dir: str | None, model: str, resume: bool) -> Path:
    """The run folder; a finished or foreign run is never overwritten (nothing is created)."""
    if output_dir:
        run_dir = Path(output_dir).expanduser().resolve()
    elif resume:
        found = _latest_run(model)
        if found is None:
            raise TrainingInputError(
                f"--resume: no unfinished {model} run under {workspace() / RUNS} (name a "
                "finished one with --output-dir to train it on)"
            )
        run_dir = found
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_dir = workspace() / RUNS / f"train-{model}-{stamp}-{secrets.token_hex(2)}"
    if not resume and run_dir.is_dir() and holds_a_run(run_dir):
        raise TrainingInputError(
            f"output dir {run_dir} already holds files; pass --resume to continue that run "
            "or choose another --output-dir (nothing was overwritten)"
        )
    return run_dir


def holds_a_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything but what a run stopped before its first checkpoint
    leaves (its lock, TensorBoard events, a half-written or lone ``best.pt``): such a folder
    had refused a new run ("pass --resume") and ``--resume`` ("no checkpoint") alike."""
    for entry in run_dir.iterdir():
        if entry.name == RUN_LOCK or (entry.name == "tensorboard" and entry.is_dir()):
            continue
        if entry.name != CHECKPOINT_DIR or not entry.is_dir():
            return True
        if any(c.name != BEST and not c.name.startswith(".") for c in entry.iterdir()):
            return True
    return False


@contextlib.contextmanager
def held_run_dir(run_dir: Path, resume: bool) -> Iterator[None]:
    """The run folder, created and locked from before the data is read to the registration.

    Two runs in one folder (a ``--resume`` while the run still trains, or one ``--output-dir``
    given twice) each loaded the other's best checkpoint: one registered the other's weights
    under its own options. The second is refused at once. A flock, so ``kill -9`` leaves no
    stale lock; a new folder that a refusal leaves empty is removed again.
    """
    created = not run_dir.exists()
    create_run_dir(run_dir)
    lock = FileLock(run_dir / RUN_LOCK)
    if not lock.acquire(timeout=0):
        raise TrainingInputError(
            f"output dir {run_dir} is in use by another training run (pid "
            f"{holder(lock.path)}); wait for it to end, or choose another --output-dir"
        )
    try:
        if not resume and holds_a_run(run_dir):
            raise TrainingInputError(
                f"output dir {run_dir} already holds files; pass --resume to continue that run "
                "or choose another --output-dir (nothing was overwritten)"
            )
        yield
    except BaseException:
        if created and all(p.name == RUN_LOCK for p in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        lock.release()


def create_run_dir(run_dir: Path) -> None:
    """Create the run folder and prove it is writable (the first write of a run)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TrainingInputError(
            f"output dir {run_dir} is not writable: {exc.strerror or exc}"
        ) from exc


def load_data(plan: Plan) -> RunData:
    """Decode every split once at the run's image size (holdout when the version has one)."""
    started = time.perf_counter()
    root, classes, size = plan.dataset.root, plan.classes, plan.image_size
    if plan.landmarks is not None:
        with_holdout = plan.dataset.lists_holdout()
        landmarks_id = plan.meta.get("landmarks_id")
        data = RunData(*landmark_splits(plan.landmarks, classes, with_holdout, landmarks_id))
    else:
        splits = {s: load_split(root, s, classes, size) for s in plan.dataset.image_splits()}
        data = RunData(splits["train"], splits["val"], splits["test"], splits.get("holdout"))
    version = plan.dataset.version
    print(
        f"dataset {version.name} {version.version} ({version.id}): "
        + ", ".join(f"{s} {n}" for s, n in data.sizes().items())
        + (f", holdout {len(data.holdout)}" if data.holdout is not None else "")
        + (f" images at {size}px" if size else " landmark rows")
        + f", loaded in {time.perf_counter() - started:.1f}s"
    )
    untrained = untrained_classes(plan, data)
    if untrained:
        rows = "photos with a hand" if plan.landmarks is not None else "images"
        warnings.warn(
            f"no train {rows} for class(es) {', '.join(untrained)}: the model cannot answer "
            "them; the registry records it and select_best will not promote this model",
            stacklevel=2,
        )
    return data


def untrained_classes(plan: Plan, data: RunData) -> list[str]:
    """Classes the model claims but has no train row of (the landmark model answers
    ``nothing`` from the hand-found flag, so it needs none of those)."""
    counts = torch.bincount(data.train.labels, minlength=len(plan.classes)).tolist()
    answered = {"nothing"} if plan.landmarks is not None else set()
    return [c for c, n in zip(plan.classes, counts) if n == 0 and c not in answered]

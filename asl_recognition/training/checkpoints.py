"""Training checkpoints: where a run keeps them, how they are written, and which may be resumed.

A run folder holds ``checkpoints/last.pt`` (everything a resume needs, RNG states included for
inspection) and ``checkpoints/best.pt`` (the weights of the best val macro-F1).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from asl_recognition.training.errors import TrainingInputError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
# Checkpoints are written after the first epoch, then at most this often, and after the last
# epoch: a crash loses at most this much training. An image model's epoch is longer, so it saves
# every epoch; the landmark MLP runs ~10 epochs a second and spent a third of its fit saving.
CHECKPOINT_SECONDS = 10.0
# What a checkpoint must share with the run that resumes it: the same architecture at the same
# size, trained on the same dataset version with the same split.
# A landmark model resumed on another hand table (or detector) would be registered as trained on
# it, and served with a hand step its weights never saw.
RESUME_KEYS = (
    "model_name",
    "image_size",
    "dataset_id",
    "manifest_sha256",
    "landmarks_id",
    "hand_detector",
)
# Options the rest of a resumed run would train with, and its registration would claim for the
# whole run (``meta["recipe"]``); --epochs, --max-steps, --patience and --keep may change.
RECIPE_OPTIONS = ("batch_size", "seed", "augment", "balance", "label_smoothing")
# What a resume needs besides the weights; a checkpoint missing one was a KeyError traceback.
STATE_KEYS = ("model", "optimizer", "scheduler", "rng", "best_f1", "best_epoch", "bad_epochs")


def checkpoint_path(run_dir: str | Path, name: str) -> Path:
    """The checkpoint ``name`` (:data:`LAST` or :data:`BEST`) of the run in ``run_dir``."""
    return Path(run_dir) / CHECKPOINT_DIR / name


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Atomic: a crash while saving never leaves a half-written checkpoint behind."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    """The torch, numpy and python RNG states, as a checkpoint keeps them: tensors and plain
    values only, so that it loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the RNG states :func:`rng_state` saved (an older checkpoint's numpy keys are an
    array, not a tensor)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])


# What a checkpoint written before the RNG states became tensors holds besides plain data: the
# numpy RNG's keys, an array (rebuilt by numpy's own reconstructor, no other code).
_LEGACY_GLOBALS = [
    np.core.multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]
# Once, for the process: the ``safe_globals`` context manager removes its globals from torch's
# process-wide list on exit, also those another caller (or thread) still relies on.
torch.serialization.add_safe_globals(_LEGACY_GLOBALS)


def load_checkpoint(path: Path, device: str = "cpu") -> Any:
    """A checkpoint of this project, loaded as data only: a run folder's file may have been
    replaced, and ``weights_only=False`` ran whatever its pickle said."""
    return torch.load(path, map_location=device, weights_only=True)


def _described(meta: dict[str, Any], key: str) -> str:
    if key == "dataset_id" and meta.get("dataset_id"):
        return f"dataset {meta.get('dataset_version')} ({meta['dataset_id']})"
    if key == "manifest_sha256" and meta.get("manifest_sha256"):
        return f"split manifest sha256 {meta['manifest_sha256'][:12]}"
    value = meta.get(key)
    return f"{key} {value!r}" if value is not None else f"no recorded {key}"


def _loaded(path: Path) -> Any:
    """``load_checkpoint``, its failure a one-line refusal (torch raises many types)."""
    try:
        return load_checkpoint(path)
    except Exception as exc:
        reason = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()[0] if str(exc) else ""
        raise TrainingInputError(
            f"--resume: {path} is not a readable checkpoint: {reason or type(exc).__name__}"
        ) from None


def _load(path: Path) -> dict[str, Any]:
    """The training checkpoint at ``path``; a missing or foreign file is a one-line refusal."""
    if not path.is_file():
        raise TrainingInputError(
            f"--resume: no checkpoint at {path} (a run stopped before its first checkpoint "
            "is started again without --resume)"
        )
    state = _loaded(path)
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise TrainingInputError(f"--resume: {path} is not a training checkpoint")
    missing = [key for key in STATE_KEYS if key not in state]
    epoch = state["epoch"]
    if missing or not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        why = f"lacks {', '.join(missing)}" if missing else f"has epoch {epoch!r}"
        raise TrainingInputError(f"--resume: {path} {why}; it is not a checkpoint to resume")
    return state


def check_resumable(
    path: Path, classes: Sequence[str], meta: dict[str, Any], lr: float | None = None
) -> dict[str, Any]:
    """Load the checkpoint at ``path``; refuse it unless it was made by a run like this one.

    Resuming on another dataset version (even the same images split with another seed) would
    train on images the checkpoint had as val or test: silent leakage. The optimizer's state
    comes back with its learning rate, so another ``lr`` would be registered but never used.
    """
    state = _load(path)
    saved_lr = (state.get("config") or {}).get("lr")
    if lr is not None and isinstance(saved_lr, float) and saved_lr != lr:
        raise TrainingInputError(
            f"--resume: {path} was trained with --lr {saved_lr:g}, which its optimizer state "
            f"keeps; --lr {lr:g} would be recorded but not used (resume with --lr {saved_lr:g}, "
            "or start a new run)"
        )
    if state.get("classes") != list(classes):
        raise TrainingInputError(
            f"--resume: checkpoint classes differ from the dataset's ({path})"
        )
    saved = state.get("meta") or {}
    for key in RESUME_KEYS:
        if saved.get(key) != meta.get(key):
            own = "the checkpoint's own settings"
            if key in ("dataset_id", "manifest_sha256") and saved.get("dataset_id"):
                own = f"--dataset-version {saved['dataset_id']}"
            raise TrainingInputError(
                f"--resume: {path} was trained with {_described(saved, key)}, this run has "
                f"{_described(meta, key)}; refused, nothing was changed (start a new run, or "
                f"resume with {own})"
            )
    _check_recipe(path, state, meta)
    _check_best(path.with_name(BEST), state, meta)
    return state


def _check_recipe(path: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Another --seed, --batch-size, --augment... had resumed in silence: the model was trained
    with two recipes and registered with the second (a checkpoint without a recipe: unchecked)."""
    saved = (state.get("meta") or {}).get("recipe")
    if not isinstance(saved, dict):
        return
    for key, value in (meta.get("recipe") or {}).items():
        if key in saved and saved[key] != value:
            flag = f"--{key.replace('_', '-')}"
            raise TrainingInputError(
                f"--resume: {path} was trained with {flag} {saved[key]}, this run has "
                f"{flag} {value}; it would be registered with options it was not trained with "
                f"(resume with {flag} {saved[key]}, or start a new run)"
            )


def _check_best(path: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """``best.pt``, which a ``--keep best`` run exports, is checked as ``last.pt`` is, before
    any training: a truncated one had ended the run in a traceback after the training, and one
    of another dataset or hand table was exported and registered as trained on this one."""
    if not state["best_epoch"]:
        return
    best = _loaded(path)
    problem = None
    if not isinstance(best, dict) or not isinstance(best.get("model"), dict):
        problem = "holds no model state"
    elif best.get("epoch") != state["best_epoch"] and not _saved_after(best, state):
        problem = f"holds epoch {best.get('epoch')!r}, not best epoch {state['best_epoch']}"
    else:
        key = next((k for k in RESUME_KEYS if best.get(k) != meta.get(k)), None)
        if key is not None:
            problem = f"was trained with {_described(best, key)}, not {_described(meta, key)}"
    if problem:
        raise TrainingInputError(
            f"--resume: {path} {problem}: it is not this run's best checkpoint; refused, "
            "nothing was changed (start a new run)"
        )


def _saved_after(best: dict[str, Any], state: dict[str, Any]) -> bool:
    """``best.pt`` of an epoch after ``last.pt``'s: a run killed between writing the two. The
    resume trains those epochs again (same arithmetic) and writes its best again; a run that
    ends before then is refused by ``Trainer.load_best``."""
    epoch = best.get("epoch")
    return isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > state["epoch"]

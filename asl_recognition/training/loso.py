"""Leave-one-source-out: how the recipe's landmark model does on people and cameras it never saw.

The in-distribution test split shares signers, cameras and rooms with training, so it flatters
every change. Here each group of one ASL_landmarks version (a source: Kaggle frames, Roboflow
phone photos, the webcam set; for ``--by-signer`` sources, each signer: Massey hand1..hand5) is
left out in turn: the landmark MLP is trained on the train split of every OTHER group (their val
split drives the scheduler, as in the recipe) with the recipe's own train options, and scored on
EVERY row of the left-out group (train/val/test/holdout alike) through the shared per-group
scorer (``evaluate.score_groups``). A missed hand counts as wrong, as serving would answer it.

The training is the recipe's: ``run.train`` on a :class:`run.Plan`, so a change to the loop, the
augmentation or the model reaches the folds without a copy here.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from asl_recognition.data.run_folders import run_report_dir
from asl_recognition.locks import FileLock, holder
from asl_recognition.options import from_mapping
from asl_recognition.paths import REPO_ROOT
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.evaluate import predict, score_groups
from asl_recognition.training.loso_report import (
    REPORT,
    clear_report,
    log_report,
    markdown_table,
    summarise,
    write_report,
)
from asl_recognition.training.options import LosoOptions, TrainOptions
from asl_recognition.training.runtime import intra_op_threads

WORST_CLASSES = 3
TrainedFold = Callable[[TrainOptions, Any, Any, Path], nn.Module]


# -- groups -----------------------------------------------------------------------------------
def row_groups(table: Any, by_signer: Sequence[str]) -> np.ndarray:
    """Each row's group: ``source/signer`` for ``by_signer`` sources, else ``source``."""
    sources = table["source"].fillna("").astype(str).replace("", "unlabelled")
    signers = table["signer"].fillna("").astype(str)
    split = sources.isin(list(by_signer)) & (signers != "")
    return np.where(split, sources + "/" + signers, sources).astype(str)


def chosen_groups(groups: np.ndarray, wanted: Sequence[str]) -> list[str]:
    """The groups to leave out (all when ``wanted`` is empty); an unknown name is refused."""
    present = sorted(set(groups.tolist()))
    unknown = sorted(set(wanted) - set(present))
    if unknown:
        raise TrainingInputError(
            f"--groups: no rows of {', '.join(unknown)}; groups: {', '.join(present)}"
        )
    if len(present) < 2:
        raise TrainingInputError(
            f"leave-one-source-out needs two groups or more; the table has {present}"
        )
    return [g for g in present if not wanted or g in wanted]


# -- the recipe's training --------------------------------------------------------------------
def recipe_train_options(opts: LosoOptions, dataset_id: str, landmarks_id: str) -> TrainOptions:
    """The recipe's train step options, on this ASL version and table, registering nothing."""
    from asl_recognition.pipeline.dag import ASL_DAG
    from asl_recognition.pipeline.recipe import RecipeError, load_recipe

    path = Path(opts.recipe)
    path = path if path.is_absolute() else REPO_ROOT / path
    try:
        values = load_recipe(ASL_DAG, path)
    except RecipeError as exc:
        raise TrainingInputError(f"--recipe: {exc}") from exc
    train = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("train/")}
    options = from_mapping(TrainOptions, train)
    if options.model != "landmarks":
        raise TrainingInputError(
            f"--recipe {opts.recipe}: its train step is not --model landmarks"
        )
    return replace(
        options,
        dataset_version=dataset_id,
        landmarks_version=landmarks_id,
        epochs=opts.epochs or options.epochs,
        external="none",
        register=False,
        resume=False,
        weights=None,
    )


def fit_fold(options: TrainOptions, dataset: Any, data: Any, run_dir: Path) -> nn.Module:
    """``run.train`` on the fold's rows, exactly as the train step runs it (no logging)."""
    from asl_recognition.training.landmark_run import build_landmark_net
    from asl_recognition.training.run import train
    from asl_recognition.training.run_inputs import Plan, training_device
    from asl_recognition.training.runtime import seed_everything

    seed_everything(options.seed)  # the same initial weights in every fold
    model = build_landmark_net(dataset.classes, None)
    meta = {"model_name": options.model, "image_size": 0, "classes": dataset.classes}
    device = training_device(options.device)
    # landmarks: not None selects the landmark path of every stage (augmentation included)
    plan = Plan(options, device, dataset, 0, None, model, run_dir, meta, None, landmarks=data)
    _fit, trained = train(plan, data, writer=None, logger=None)
    return trained.eval()


def fold_data(table: Any, classes: list[str]) -> Any:
    """The recipe's splits (train: rows with a hand) of the rows the fold may see."""
    from asl_recognition.training.landmark_run import landmark_splits
    from asl_recognition.training.run_inputs import RunData

    return RunData(*landmark_splits(table, classes, with_holdout=False))


# -- scoring ----------------------------------------------------------------------------------
def worst_classes(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> list[dict]:
    """The lowest per-class accuracies (ties: the larger class first), with their counts."""
    matrix = np.asarray(matrix)
    rows = [
        {"class": classes[i], "correct": int(matrix[i, i]), "images": int(matrix[i].sum())}
        for i in range(len(classes))
        if matrix[i].sum()
    ]
    rows.sort(key=lambda r: (r["correct"] / r["images"], -r["images"], r["class"]))
    return rows[:WORST_CLASSES]


def score_fold(model: nn.Module, table: Any, group: str, classes: list[str]) -> dict[str, Any]:
    """Every row of the left-out group through the shared scorer; again for rows with a hand."""
    from asl_recognition.training.landmark_data import table_rows

    rows, labels = table_rows(table, classes)
    rows, labels = torch.from_numpy(rows), torch.from_numpy(labels)
    preds = predict(model, rows, labels).preds
    found = torch.from_numpy(table["hand_found"].astype(bool).to_numpy(copy=True))
    scores = score_groups(preds, labels, [group] * len(labels), classes)[group]
    hand = (
        score_groups(preds[found], labels[found], [group] * int(found.sum()), classes)[group]
        if found.any()
        else None
    )
    return {
        "group": group,
        "images": scores["images"],
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "hand_found_rate": float(found.float().mean()),
        "accuracy_given_hand": hand["accuracy"] if hand else None,
        "worst_classes": worst_classes(scores["confusion_matrix"], classes),
        "confusion_matrix": scores["confusion_matrix"],
    }


def run_fold(
    options: TrainOptions,
    dataset: Any,
    table: Any,
    groups: np.ndarray,
    group: str,
    work: Path,
    fit: TrainedFold = fit_fold,
) -> dict[str, Any]:
    """Train without ``group``'s rows, score on all of them; the fold's log goes to a file."""
    started = time.perf_counter()
    seen, left_out = table[groups != group], table[groups == group]
    data = fold_data(seen, dataset.classes)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", group)
    log = work / f"fold-{slug}.log"
    with open(log, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        with tempfile.TemporaryDirectory(dir=work) as run_dir:
            model = fit(options, dataset, data, Path(run_dir))
    result = score_fold(model, left_out, group, dataset.classes)
    result.update(
        train_rows=len(data.train),
        val_rows=len(data.val),
        seconds=round(time.perf_counter() - started, 1),
        log=log.name,
    )
    return result


# -- the task ---------------------------------------------------------------------------------
def run_loso(opts: LosoOptions, ctx: Any = None, fit: TrainedFold = fit_fold) -> dict[str, Any]:
    """Every fold of one ASL_landmarks version, the report files and the task's outputs."""
    from asl_recognition.training.data import open_published
    from asl_recognition.training.landmark_run import table_problem

    started = time.perf_counter()
    table, meta = _table(opts.landmarks_version)
    dataset = open_published(meta["asl_dataset_id"])
    problem = table_problem(table, dataset.classes)  # as the train step checks it
    if problem:
        raise TrainingInputError(f"ASL_landmarks {meta['id']}: {problem}; publish it again")
    options = recipe_train_options(opts, dataset.version.id, meta["id"])
    groups = row_groups(table, opts.by_signer)
    chosen = chosen_groups(groups, opts.groups)
    # a folder per run (like validate_raw's reports): two runs at once never mix their files
    out_dir = Path(opts.output_dir or run_report_dir(f"{REPORT}/{meta['id']}"))
    with writing_to(out_dir):
        with intra_op_threads(opts.threads):
            folds = [_fold(options, dataset, table, groups, g, out_dir, fit) for g in chosen]
        report = {
            "landmarks_id": meta["id"],
            "landmarks_version": meta.get("version", ""),
            "asl_dataset_id": dataset.version.id,
            "recipe": opts.recipe,
            "train_options": {k: getattr(options, k) for k in _SHOWN_OPTIONS},
            "threads": opts.threads,
            "by_signer": list(opts.by_signer),
            "folds": folds,
            "summary": summarise(folds),
            "seconds": round(time.perf_counter() - started, 1),
        }
        files = write_report(report, dataset.classes, out_dir)
        print(markdown_table(report), end="")
        if ctx is not None:  # under the lock: ClearML uploads the images from these files
            log_report(ctx, report, files)
    summary = report["summary"]
    return {
        "report": str(out_dir / f"{REPORT}.md"),
        "landmarks_id": meta["id"],
        "mean_accuracy": summary["mean_accuracy"],
        "worst_group": summary["worst_group"],
        "worst_accuracy": summary["worst_accuracy"],
    }


def _fold(
    options: TrainOptions,
    dataset: Any,
    table: Any,
    groups: np.ndarray,
    group: str,
    out_dir: Path,
    fit: TrainedFold,
) -> dict[str, Any]:
    """:func:`run_fold`, then its one line of progress."""
    f = run_fold(options, dataset, table, groups, group, out_dir, fit)
    print(
        f"left out {group}: accuracy {f['accuracy']:.3f} on {f['images']} rows, "
        f"hand found {f['hand_found_rate']:.3f}, trained on {f['train_rows']} rows "
        f"({f['seconds']} s)",
        flush=True,
    )
    return f


@contextlib.contextmanager
def writing_to(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock while a report is made in it; refuse (one line) while another
    run holds it. A flock: a run killed with ``kill -9`` leaves no stale lock."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out_dir / ".loso.lock")
    if not lock.acquire(timeout=0):
        raise TrainingInputError(
            f"--output-dir {out_dir}: another leave-one-source-out report (pid "
            f"{holder(lock.path)}) is being written there; wait for it or choose another folder"
        )
    try:
        clear_report(out_dir)
        yield
    finally:
        lock.release()


_SHOWN_OPTIONS = ("epochs", "batch_size", "lr", "label_smoothing", "keep", "augment", "seed")


def _table(ref: str) -> tuple[Any, dict[str, Any]]:
    """The ASL_landmarks version ``ref`` (one line when it does not exist)."""
    from asl_recognition.data.landmarks import load_table
    from asl_recognition.store import DatasetNotFoundError, get_store

    try:
        version = get_store().version_for("ASL_landmarks", ref)
        table, meta = load_table(version.id)
    except DatasetNotFoundError as exc:
        raise TrainingInputError(
            f"--landmarks-version {ref}: {exc} (run the recipe's pipeline first)"
        ) from exc
    return table, {**meta, "version": version.version}

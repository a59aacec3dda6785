"""The landmark model's steps of a training run (``--model landmarks``).

``run.py`` wires the same stages for every model; these are the ones that differ: the data
(ASL_landmarks rows of the ASL version being trained on), the external check (photos measured by
the serving landmarker) and the augmentation (landmark space).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asl_recognition.classes import CLASSES
from asl_recognition.training.architectures import ARCHITECTURES
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.landmark_model import LandmarkAugment, LandmarkNet, RowsAugment

LANDMARK_MODEL = "landmarks"
# torch intra-op threads while the landmark MLP trains: its 64-row steps are too small to share
# between threads (bench/bench_train.py --model landmarks times both).
LANDMARK_THREADS = 1


def build_landmark_net(classes: list[str], weights: str | None) -> LandmarkNet:
    """A fresh (or ``--weights``-initialised) landmark net answering ``nothing`` without a hand."""
    if "nothing" not in classes:
        raise TrainingInputError("the landmark model needs a 'nothing' class (for no hand)")
    mlp = ARCHITECTURES[LANDMARK_MODEL].build(len(classes))
    net = LandmarkNet(len(classes), classes.index("nothing"), mlp)
    if weights:  # a checkpoint of this project, or a state dict of the net or of its MLP
        from asl_recognition.training.models import load_weights

        load_weights(mlp, weights, LANDMARK_MODEL, prefix="mlp.")
    return net


def open_landmarks(
    ref: str, dataset_id: str, classes: list[str] | None = None
) -> tuple[Any, dict[str, Any]]:
    """The ASL_landmarks table measured on ``dataset_id`` (another ASL version is refused),
    checked against ``classes`` (the project's by default)."""
    from asl_recognition.data.landmarks import load_table
    from asl_recognition.store import DatasetNotFoundError

    try:
        table, meta = load_table(ref)
    except DatasetNotFoundError as exc:
        raise TrainingInputError(
            f"--landmarks-version {ref}: {exc} (run tasks/publish_landmarks.py first)"
        ) from exc
    if meta.get("asl_dataset_id") != dataset_id:
        raise TrainingInputError(
            f"ASL_landmarks {meta['id']} was measured on ASL {meta.get('asl_dataset_id')}, not "
            f"on the training dataset {dataset_id}: pass the matching --landmarks-version"
        )
    problem = table_problem(table, classes)
    if problem:
        raise TrainingInputError(f"ASL_landmarks {meta['id']}: {problem}; publish it again")
    return table, meta


TABLE_COLUMNS = ("class", "split", "path", "hand_found", "handedness")


def table_problem(table: Any, classes: list[str] | None = None) -> str | None:
    """Why the table cannot be trained on, or None: a version not written by publish_landmarks
    (a column missing, a label no class has, a non-finite point of a found hand, a split
    without rows) had ended in a traceback, some after the whole training."""
    import numpy as np
    import pandas as pd

    from asl_recognition.classes import CLASSES
    from asl_recognition.data.landmarks import POINT_COLUMNS

    missing = [c for c in (*TABLE_COLUMNS, *POINT_COLUMNS) if c not in table.columns]
    if missing:
        return f"its table lacks the column(s) {', '.join(missing[:3])}"
    unknown = sorted(set(map(str, table["class"])) - set(classes or CLASSES))
    if unknown:
        return f"its table labels rows {unknown[0]!r}, which is no class"
    if not table["hand_found"].isin([0, 1, True, False]).all():
        return "its hand_found column holds values other than 0 and 1"
    found = table[table["hand_found"].astype(bool)][list(POINT_COLUMNS)]
    points = found.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(points).all():  # text in a cell reads as NaN here
        return "a found hand's points are not all finite numbers"
    empty = [s for s in ("train", "val", "test") if not (table["split"] == s).any()]
    return f"its table has no {empty[0]} rows" if empty else None


def landmark_splits(
    table: Any, classes: list[str], with_holdout: bool, landmarks_id: str | None = None
) -> tuple[Any, ...]:
    """train (hands only: no-hand rows carry no gradient), val, test, holdout (all rows)."""
    from asl_recognition.training.landmark_data import landmark_split

    train = landmark_split(table, "train", classes, hands_only=True)
    if len(train) == 0:
        photos = int((table["split"] == "train").sum())
        raise TrainingInputError(
            f"no hand was found in any of the {photos} train photo(s) of ASL_landmarks "
            f"{landmarks_id or ''}: nothing to train the landmark model on; see that version's "
            "hand-found report (summary.json and hand_found_rate.png, also under "
            "<workspace>/reports/ASL_landmarks/)"
        )
    val, test = (landmark_split(table, s, classes) for s in ("val", "test"))
    holdout = landmark_split(table, "holdout", classes) if with_holdout else None
    return train, val, test, holdout


def landmark_augment(preset: str) -> RowsAugment | None:
    """The per-batch hook: ``none`` switches augmentation off; every other preset is
    landmark-space augmentation of the rows that have a hand."""
    return None if preset == "none" else RowsAugment(LandmarkAugment())


def measure_external(
    folder: str, classes: list[str] = list(CLASSES), detector: Mapping[str, Any] | None = None
) -> Any:
    """The external folder's photos measured like served ones (see ``landmark_data``): with the
    training table's detector settings (``detector``, as recorded), else the defaults."""
    from asl_recognition.hands import HandLandmarker, detector_arguments
    from asl_recognition.training.landmark_data import measure_folder

    return measure_folder(folder, classes, HandLandmarker(**detector_arguments(detector or {})))

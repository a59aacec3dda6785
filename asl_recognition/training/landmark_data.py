"""Landmark rows for training: the ASL_landmarks table as tensors, and external folders measured.

A row is the 63 features (``hands.features_from_landmarks``) plus a ``hand_found`` flag; rows
without a hand are zeros with flag 0 (scored as ``nothing``, as serving answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from asl_recognition.data.landmarks import POINT_COLUMNS
from asl_recognition.hands import HandLandmarker
from asl_recognition.hands.landmarker import feature_row, photo_row
from asl_recognition.hands.pool import map_photos
from asl_recognition.training.data import TensorSplit
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.evaluate import ExternalSet, class_folder
from asl_recognition.training.landmark_model import FEATURES

ROW = FEATURES + 1


def table_rows(table, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [N, 64] float32, labels [N] int64)`` from ASL_landmarks rows."""
    rows = np.zeros((len(table), ROW), dtype=np.float32)
    found = table["hand_found"].astype(bool).to_numpy()
    points = table[POINT_COLUMNS].to_numpy(dtype=np.float64)
    for i in np.flatnonzero(found):
        try:
            rows[i] = feature_row(points[i], table["handedness"].iloc[i])
        except ValueError as exc:  # degenerate points, another handedness: not measured so
            raise TrainingInputError(
                f"ASL_landmarks row of {table['path'].iloc[i]}: {exc}; publish it again"
            ) from None
    labels = np.array([classes.index(c) for c in table["class"]], dtype=np.int64)
    return rows, labels


def landmark_split(table, split: str, classes: Sequence[str], hands_only: bool = False):
    """One split of the table as a :class:`TensorSplit` (``images`` holds the rows)."""
    part = table[table["split"] == split]
    if hands_only:
        part = part[part["hand_found"].astype(bool)]
    rows, labels = table_rows(part, classes)
    return TensorSplit(torch.from_numpy(rows), torch.from_numpy(labels), list(part["path"]))


def measure_folder(
    folder: str | Path, classes: Sequence[str], landmarker: HandLandmarker
) -> ExternalSet:
    """``<CLASS>/*`` photos of another source, measured by the same landmarker as serving."""
    folder = Path(folder)
    files, used, skipped = class_folder(folder, classes)
    measured = map_photos(photo_row, landmarker, [path for path, _ in files], desc="external")
    rows, labels, paths, unreadable = [], [], [], []
    for (path, index), row in zip(files, measured):
        if row is None:
            unreadable.append(str(path))
            continue
        rows.append(row)
        labels.append(index)
        paths.append(path.relative_to(folder).as_posix())
    array = np.stack(rows) if rows else np.zeros((0, ROW), np.float32)
    split = TensorSplit(torch.from_numpy(array), torch.tensor(labels, dtype=torch.int64), paths)
    return ExternalSet(split, used, skipped, unreadable)

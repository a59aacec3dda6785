"""A registered model's confusion matrix and class labels, for select_best and the status page.

Training registers ``val_confusion_matrix`` and ``test_confusion_matrix`` with the metrics; older
or hand-made records may keep one in ``metrics.json`` beside the run or the ONNX file, or only a
PNG. Both readers look in the same places in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SPLITS = ("test", "val", "external")
_FILES = ("metrics.json", "summary.json", "confusion_matrix.json")


def _as_matrix(value: Any, prefer: Sequence[str]) -> tuple[list[list[float]] | None, str | None]:
    """A list of numeric rows, or one found under ``matrix``/``values``/a split key (its split)."""
    if isinstance(value, Mapping):
        for key in ("matrix", "values", *prefer):
            if key in value:
                matrix, _ = _as_matrix(value[key], prefer)
                if matrix:
                    return matrix, key if key in prefer else None
        return None, None
    if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        try:
            return [[float(x) for x in row] for row in value], None
        except (TypeError, ValueError):
            return None, None
    return None, None


def record_dirs(record: Any) -> list[Path]:
    """The run folder (``params.run_dir``) and the ONNX file's folder, where files may sit."""
    dirs: list[Path] = []
    params = getattr(record, "params", None) or {}
    for candidate in (params.get("run_dir"), getattr(record, "onnx_path", None)):
        if candidate:
            path = Path(str(candidate))
            dirs.append(path if path.is_dir() else path.parent)
    return dirs


def find_confusion(record: Any, prefer: Sequence[str] = SPLITS) -> dict[str, Any]:
    """``{"matrix", "split", "png"}``: the first matrix of the preferred splits, and any PNG."""
    prefer = tuple(dict.fromkeys(prefer))
    found: dict[str, Any] = {"matrix": None, "split": None, "png": None}
    sources: list[Any] = [getattr(record, "metrics", None) or {}]
    for folder in record_dirs(record):
        for name in _FILES:
            try:
                sources.append(json.loads((folder / name).read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                continue
        if found["png"] is None:
            pngs = sorted(folder.glob("*confusion*.png"))
            found["png"] = next((p for p in pngs if "test" in p.name), pngs[0] if pngs else None)
    keys = [f"{s}_confusion_matrix" for s in prefer] + ["confusion_matrix", "confusion_matrices"]
    for source in sources:
        if not isinstance(source, Mapping):
            continue
        for key in keys:
            if key not in source:
                continue
            matrix, inner = _as_matrix(source[key], prefer)
            if matrix:
                split = key.split("_")[0] if key.split("_")[0] in prefer else inner
                return {**found, "matrix": matrix, "split": split}
    return found


def read_classes(record: Any) -> list[str]:
    """The record's class list in index order (empty when its file cannot be read)."""
    try:
        text = Path(str(record.classes_path)).read_text(encoding="utf-8")
    except (OSError, TypeError, AttributeError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]

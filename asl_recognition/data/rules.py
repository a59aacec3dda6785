"""Quarantine and normalisation rules: every scanned file ends valid or quarantined, with a reason.

GX says *what* is wrong with the table; these rules decide *which file* is excluded and why, so
that each bad input carries its own machine-readable reason in report.json.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from asl_recognition.classes import CLASSES

# Entries recorded but never stored in the raw version: a link would copy whatever it points
# at, a FIFO, socket or device has no content to copy, an unreadable file none to read, and a
# name that is not UTF-8 cannot be a dataset path (records, manifests and ClearML are text).
UNSTORABLE = ("symlink", "not_a_regular_file", "unreadable", "name_not_utf8")


def _reason(row: dict, known: set[str], min_side: int, max_side: int) -> str | None:
    if row["error"] in UNSTORABLE:  # before litter: a FIFO named .DS_Store is still a FIFO
        return row["error"]
    if row["litter"]:
        return "litter"
    if row["class"] is None or pd.isna(row["class"]):
        return "no_class_folder"
    if row["class"] not in known:
        return f"unknown_class:{row['class']}"
    if isinstance(row["error"], str) and row["error"]:  # a decode failure (imageio's reasons)
        return row["error"]
    w, h = int(row["width"]), int(row["height"])
    if not (min_side <= w <= max_side and min_side <= h <= max_side):
        return f"size_out_of_bounds:{w}x{h}"
    return None


def apply_rules(
    table: pd.DataFrame,
    classes: Sequence[str] = CLASSES,
    min_side: int = 32,
    max_side: int = 8192,
) -> pd.DataFrame:
    """Add ``status`` (valid|quarantined), ``reason`` and ``facts`` (normalisations) columns.

    Exact duplicates keep the first copy (sorted by path) and quarantine later copies as
    ``duplicate_of:<first path>``: the pixels are already in the dataset once.
    """
    out = table.copy()
    known = set(classes)
    records = out.to_dict("records")
    reasons: list[str | None] = [_reason(row, known, min_side, max_side) for row in records]
    paths = list(out["path"])
    shas = list(out["sha256"])
    first_by_sha: dict[str, str] = {}
    for k in sorted(range(len(paths)), key=lambda i: paths[i]):
        if reasons[k] is not None:
            continue
        if shas[k] in first_by_sha:
            reasons[k] = f"duplicate_of:{first_by_sha[shas[k]]}"
        else:
            first_by_sha[shas[k]] = paths[k]
    # object dtype: pandas' string dtype would turn None into NaN, which is truthy
    out["reason"] = pd.Series(reasons, index=out.index, dtype=object)
    out["status"] = ["quarantined" if r else "valid" for r in reasons]
    out["facts"] = pd.Series(
        [_facts(row) if r is None else [] for r, row in zip(reasons, records)],
        index=out.index,
        dtype=object,
    )
    return out


def _facts(row: dict) -> list[str]:
    """What normalisation did to a usable file (recorded, not hidden)."""
    facts = []
    if row["mode"] != "RGB":
        facts.append(f"converted_from:{row['mode']}")
    orientation = row["exif_orientation"]
    if not pd.isna(orientation) and int(orientation) not in (0, 1):
        facts.append(f"exif_transposed:orientation={int(orientation)}")
    return facts


def folder_hint(table: pd.DataFrame, classes: Sequence[str], none_valid: bool) -> str:
    """Why images sat outside the class folders, for the unusable line: a folder named like a
    class but for its case (``a``, ``Del``), or the folders found instead (the Kaggle archive's
    ``asl_alphabet_train/``, ``asl_alphabet_test/``). Both read "nothing readable" before."""
    reasons = [r for r in table["reason"] if isinstance(r, str)]
    found = sorted({r.split(":", 1)[1] for r in reasons if r.startswith("unknown_class:")})
    by_lower = {c.lower(): c for c in classes}
    cased = [f"{f!r} is not {by_lower[f.lower()]!r}" for f in found if f.lower() in by_lower]
    if cased:
        more = f" (and {len(cased) - 3} more)" if len(cased) > 3 else ""
        return f"; class folder names are case-sensitive: {', '.join(cased[:3])}{more}"
    if found and none_valid:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        return (
            f"; the folders holding them are {', '.join(map(repr, found[:3]))}{more}, not "
            f"classes: point the source at the folder whose subfolders are {classes[0]}, "
            f"{classes[1]}, ..."
        )
    if none_valid and "no_class_folder" in reasons:
        return f"; images must sit in <CLASS>/ folders ({classes[0]}/, {classes[1]}/, ...)"
    return ""


def usability(
    table: pd.DataFrame, classes: Sequence[str], min_per_class: int
) -> tuple[bool, str | None, dict[str, int]]:
    """Unusable only when nothing is readable or a class is missing / below the minimum."""
    valid = table[table["status"] == "valid"]
    per_class = {c: int((valid["class"] == c).sum()) for c in classes}
    hint = folder_hint(table, classes, valid.empty)
    if valid.empty:
        outside = hint and not table["class"].isin(list(classes)).any()
        what = "no image in a class folder" if outside else "nothing readable"
        return False, f"{what}: 0 valid images among {len(table)} files{hint}", per_class
    missing = [c for c, n in per_class.items() if n == 0]
    if missing:
        return False, f"class(es) missing: {', '.join(missing)}{hint}", per_class
    low = {c: n for c, n in per_class.items() if n < min_per_class}
    if low:
        worst = ", ".join(f"{c}={n}" for c, n in sorted(low.items(), key=lambda kv: kv[1])[:5])
        return (
            False,
            f"{len(low)} class(es) below --min-per-class {min_per_class}: {worst}",
            per_class,
        )
    return True, None, per_class

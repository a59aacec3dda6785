"""Plots and ClearML logger calls for the data stage (tables, histograms, preview grids).

Every function takes ``logger`` and does nothing when it is None, so the stage logic runs the
same inside a task, in a test, or from a notebook.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw


def class_histogram_png(
    counts: Mapping[str, Mapping[str, int]], path: str | Path, title: str
) -> Path:
    """One bar group per class; ``counts`` maps series name -> {class: n}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(next(iter(counts.values())).keys()) if counts else []
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.8 / max(1, len(counts))
    for i, (series, per_class) in enumerate(counts.items()):
        xs = [j + i * width for j in range(len(classes))]
        ax.bar(xs, [per_class.get(c, 0) for c in classes], width=width, label=series)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(classes))])
    ax.set_xticklabels(classes, rotation=90)
    ax.set_ylabel("images")
    ax.set_title(title)
    if len(counts) > 1:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def preview_grid(
    items: Sequence[tuple[str | Path, str]], path: str | Path, cell: int = 64, columns: int = 10
) -> Path:
    """A captioned contact sheet of (image path, caption) pairs, to eyeball labels and crops."""
    rows = max(1, math.ceil(len(items) / columns))
    sheet = Image.new("RGB", (columns * cell, rows * (cell + 12)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (image_path, caption) in enumerate(items):
        x, y = (i % columns) * cell, (i // columns) * (cell + 12)
        with Image.open(image_path) as img:
            sheet.paste(img.convert("RGB").resize((cell, cell)), (x, y))
        draw.text((x + 2, y + cell), caption[:10], fill=(0, 0, 0))
    path = Path(path)
    sheet.save(path)
    return path


def log_validation(
    logger: Any,
    report: Mapping[str, Any],
    histogram_png: Path | None,
    per_source_png: Path | None = None,
) -> None:
    """Summary table + class histogram (ClearML and matplotlib PNG), both per source too."""
    if logger is None:
        return
    _log_per_source(logger, report.get("per_source") or {}, per_source_png)
    summary = report["summary"]
    rows = [
        ("total", summary["total"]),
        ("valid", summary["valid"]),
        ("quarantined", summary["quarantined"]),
        ("normalised", summary["normalised"]),
        ("gx_success", report["success"]),
        ("usable", report["usable"]),
    ] + [(f"quarantined:{k}", v) for k, v in summary["quarantine_reasons"].items()]
    table = pd.DataFrame(rows, columns=["metric", "value"]).astype({"value": str})
    logger.report_table(
        title="validation summary", series="ASL_raw", iteration=0, table_plot=table
    )
    _log_class_histogram(logger, "class histogram", {"valid images": summary["per_class"]})
    _log_png(logger, "class histogram", histogram_png)


def _log_class_histogram(logger: Any, title: str, series: Mapping[str, Mapping[str, int]]) -> None:
    """One histogram per series (images per class) under ``title``."""
    for name, per_class in series.items():
        logger.report_histogram(
            title=title,
            series=name,
            values=list(per_class.values()),
            iteration=0,
            xlabels=list(per_class),
            xaxis="class",
            yaxis="images",
        )


def _log_png(logger: Any, title: str, png: Path | None) -> None:
    """The matplotlib rendering of the same plot, for people reading the task's debug samples."""
    if png is not None:
        logger.report_image(title=title, series="png", iteration=0, local_path=str(png))


def _log_per_source(
    logger: Any, per_source: Mapping[str, Mapping[str, Any]], png: Path | None
) -> None:
    """A row per source (files, valid, quarantined, classes) and one histogram series each."""
    if not per_source:
        return
    rows = [
        (
            name,
            s["total"],
            s["valid"],
            s["quarantined"],
            s["classes_present"],
            " ".join(s["classes_missing"]),
        )
        for name, s in per_source.items()
    ]
    columns = ["source", "files", "valid", "quarantined", "classes", "classes missing"]
    logger.report_table(
        title="validation per source",
        series="ASL_raw",
        iteration=0,
        table_plot=pd.DataFrame(rows, columns=columns).astype({"classes missing": str}),
    )
    per_class = {name: s["per_class"] for name, s in per_source.items()}
    _log_class_histogram(logger, "class histogram per source", per_class)
    _log_png(logger, "class histogram per source", png)


def log_splits(
    logger: Any,
    per_split: Mapping[str, Mapping[str, int]],
    preview_png: Path | None,
    per_source: Mapping[str, Mapping[str, int]] | None = None,
) -> None:
    """One class histogram per split, a split-size table (per source too) and the preview."""
    if logger is None:
        return
    if per_source and len(per_source) > 1:
        splits = list(per_split)
        rows = [[src] + [counts.get(s, 0) for s in splits] for src, counts in per_source.items()]
        logger.report_table(
            title="split sizes per source",
            series="ASL",
            iteration=0,
            table_plot=pd.DataFrame(rows, columns=["source"] + splits),
        )
    for split, per_class in per_split.items():
        logger.report_histogram(
            title="class histogram per split",
            series=split,
            values=[per_class[c] for c in per_class],
            iteration=0,
            xlabels=list(per_class),
            xaxis="class",
            yaxis="images",
        )
    table = pd.DataFrame(
        [(split, sum(pc.values())) for split, pc in per_split.items()], columns=["split", "images"]
    )
    logger.report_table(title="split sizes", series="ASL", iteration=0, table_plot=table)
    if preview_png is not None:
        logger.report_image(
            title="preview", series="train grid", iteration=0, local_path=str(preview_png)
        )

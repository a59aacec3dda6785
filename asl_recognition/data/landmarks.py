"""ASL_landmarks: a versioned table of hand landmarks, one row per image of an ASL version.

The feature store's second view of the same photos: landmarks are measured on the ORIGINAL raw
files (the ASL images are resized for the CNN, too small for the hand detector), with the split,
group and holdout of the ASL version they come from, so a landmark model is trained and scored on
exactly the CNN's leak-free splits. Parents: the ASL version and its ASL_raw versions. Images
where no hand is found stay in the table with ``hand_found`` false and a reason; nothing is
dropped silently. Features are not stored: training and serving derive them from the landmarks
with one function (``hands.features_from_landmarks``), so they cannot drift.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from asl_recognition.data.options import PublishLandmarksOptions
from asl_recognition.data.run_folders import run_report_dir
from asl_recognition.hands import HandLandmarker, HandResult
from asl_recognition.hands.models import verify_models
from asl_recognition.hands.pool import map_photos
from asl_recognition.imageio import ImageDecodeError
from asl_recognition.options import settle
from asl_recognition.paths import workspace

TABLE = "landmarks.csv"
SUMMARY = "summary.json"
POINT_COLUMNS = [f"lm{i}_{axis}" for i in range(21) for axis in "xyz"]
BOX_COLUMNS = ["box_x0", "box_y0", "box_x1", "box_y1"]
INFO_COLUMNS = [
    "file",
    "path",
    "split",
    "class",
    "source",
    "signer",
    "group",
    "holdout_label",
    "raw_dataset_id",
]
RESULT_COLUMNS = [
    "hand_found",
    "reason",
    "handedness",
    "handedness_score",
    "presence",
    "detection_score",
    "width",
    "height",
]
COLUMNS = INFO_COLUMNS + RESULT_COLUMNS + BOX_COLUMNS + POINT_COLUMNS
# A class with fewer train photos with a hand than this cannot be learned from landmarks.
MIN_TRAIN_HANDS = 2
NO_HAND_CLASS = "nothing"  # answered from the hand-found flag: it needs no hand
Logger = Any
Uploader = Callable[..., None]


def result_row(result: HandResult | None, width: int, height: int) -> dict[str, Any]:
    """The landmark columns of one image (NaN where no hand was found)."""
    row: dict[str, Any] = dict.fromkeys(BOX_COLUMNS + POINT_COLUMNS, np.nan)
    row.update(width=width, height=height)
    if result is None:
        row.update(hand_found=False, reason="no hand found", handedness="")
        return row
    row.update(
        hand_found=True,
        reason="",
        handedness=result.handedness,
        handedness_score=round(result.handedness_score, 6),
        presence=round(result.presence, 6),
        detection_score=round(result.detection_score, 6),
    )
    row.update(dict(zip(BOX_COLUMNS, (float(v) for v in result.box))))
    row.update(dict(zip(POINT_COLUMNS, (float(v) for v in result.landmarks.ravel()))))
    return row


def measure(landmarker: HandLandmarker, path: Path) -> dict[str, Any]:
    """Decode one file through the shared decoder and measure its hand."""
    from asl_recognition.imageio import load_rgb

    try:
        with load_rgb(path) as img:
            rgb = np.asarray(img)
    except (ImageDecodeError, OSError) as exc:
        row = result_row(None, 0, 0)
        row["reason"] = f"unreadable: {exc}"
        return row
    return result_row(landmarker.detect(rgb), rgb.shape[1], rgb.shape[0])


def manifest_items(manifest: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """Every image of an ASL manifest with its split (train/val/test/holdout) and the raw
    version its file comes from (a version may merge several)."""
    for split, items in manifest["splits"].items():
        for item in items:
            yield {
                "file": item["source"],
                "path": item["path"],
                "split": split,
                "class": item["class"],
                "source": item.get("data_source") or "",
                "signer": item.get("signer") or "",
                "group": item.get("group") or "",
                "holdout_label": item.get("holdout_label") or "",
                "raw_dataset_id": item["raw_dataset_id"],
            }


def fingerprint(asl_id: str, models_dir: Path, detector: Mapping[str, Any]) -> str:
    """Same ASL version, model files and detector settings -> same table: the version is reused.

    ``detector`` is ``HandLandmarker.settings()`` (thresholds, variant, passes): a table measured
    with other detection passes is a different table and is never reused for this one.
    """
    payload = {
        "asl": asl_id,
        "models": sorted(
            p.name + ":" + hashlib.sha256(p.read_bytes()).hexdigest()
            for p in models_dir.glob("*.tflite")
        ),
        "detector": dict(detector),
        "columns": COLUMNS,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def summarise(table: Any) -> dict[str, Any]:
    """Hand-found counts per split, class and source, and the no-hand reasons."""
    found = table["hand_found"].astype(bool)
    rate = lambda key: {  # noqa: E731 - one expression, three uses
        str(k): {"images": int(len(g)), "found": int(g["hand_found"].sum())}
        for k, g in table.assign(hand_found=found).groupby(key)
    }
    return {
        "images": int(len(table)),
        "hand_found": int(found.sum()),
        "hand_found_rate": float(found.mean()) if len(table) else 0.0,
        "per_split": rate("split"),
        "per_class": rate("class"),
        "per_source": rate("source"),
        "not_found_reasons": {
            str(k): int(v) for k, v in table.loc[~found, "reason"].value_counts().items()
        },
    }


def few_hands(table: Any, classes: list[str], minimum: int = MIN_TRAIN_HANDS) -> dict[str, int]:
    """Class -> train photos with a hand, for every class (but ``nothing``) below ``minimum``."""
    train = table[(table["split"] == "train") & table["hand_found"].astype(bool)]
    found = train["class"].value_counts()
    counts = {c: int(found.get(c, 0)) for c in classes if c != NO_HAND_CLASS}
    return {c: n for c, n in counts.items() if n < minimum}


def warn_few_hands(few: dict[str, int], where: str) -> None:
    """One warning line naming the classes the landmark model cannot learn."""
    if few:
        listed = ", ".join(f"{c} ({n})" for c, n in few.items())
        warnings.warn(
            f"{where}: class(es) with fewer than {MIN_TRAIN_HANDS} train photos with a hand "
            f"found: {listed}; a landmark model cannot learn them (see hand_found_rate.png)",
            stacklevel=3,
        )


def extract_table(
    manifest: Mapping[str, Any],
    raw_roots: Mapping[str, Path],
    landmarker: HandLandmarker,
    progress: bool = True,
) -> Any:
    """One row per manifest image: its split/group columns plus its measured hand."""
    import pandas as pd

    items = list(manifest_items(manifest))
    paths = [raw_roots[item["raw_dataset_id"]] / item["file"] for item in items]
    measured = map_photos(measure, landmarker, paths, desc="landmarks", progress=progress)
    rows = [{**item, **row} for item, row in zip(items, measured)]
    return pd.DataFrame(rows, columns=COLUMNS)


def plot_found_rates(summary: Mapping[str, Any], out: Path) -> Path:
    """Bars of the hand-found rate per class and per source: where the detector struggles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 4), gridspec_kw={"width_ratios": [4, 1]})
    for ax, key, title in ((axes[0], "per_class", "class"), (axes[1], "per_source", "source")):
        names = list(summary[key])
        rates = [summary[key][n]["found"] / max(1, summary[key][n]["images"]) for n in names]
        ax.bar(names, rates, color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_title(f"hand found per {title}")
        ax.tick_params(axis="x", rotation=90 if key == "per_class" else 30)
    axes[0].set_ylabel("share of images with a hand")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# MediaPipe's hand skeleton: wrist to each finger's four joints.
SKELETON = [
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 4),
    (0, 5),
    (5, 6),
    (6, 7),
    (7, 8),
    (5, 9),
    (9, 10),
    (10, 11),
    (11, 12),
    (9, 13),
    (13, 14),
    (14, 15),
    (15, 16),
    (13, 17),
    (0, 17),
    (17, 18),
    (18, 19),
    (19, 20),
]


def plot_preview(table: Any, raw_roots: Mapping[str, Path], out: Path, per_class: int = 1) -> Path:
    """A grid of photos, one per class, with the measured landmarks drawn on them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asl_recognition.imageio import load_rgb

    picks = table.groupby("class", sort=False).head(per_class).head(30)
    cols = 6
    rows = max(1, -(-len(picks) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), picks.iterrows()):
        try:
            with load_rgb(raw_roots[row["raw_dataset_id"]] / row["file"]) as img:
                ax.imshow(np.asarray(img))
        except (ImageDecodeError, OSError):
            continue
        if row["hand_found"]:
            points = row[POINT_COLUMNS].to_numpy(dtype=float).reshape(21, 3)
            for a, b in SKELETON:
                ax.plot(points[[a, b], 0], points[[a, b], 1], color="lime", linewidth=1)
            ax.scatter(points[:, 0], points[:, 1], s=4, color="red")
        ax.set_title(f"{row['class']} ({'hand' if row['hand_found'] else 'no hand'})", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def publish_landmarks(
    dataset_version: str | None = None,
    settings: PublishLandmarksOptions | None = None,
    logger: Logger | None = None,
    upload: Uploader | None = None,
    progress: bool = True,
    **changes: Any,
) -> dict[str, Any]:
    """Measure every image of an ASL version and publish the table (parents: ASL, ASL_raw).

    ``settings``: the publish_landmarks task's options (their defaults when None), with
    ``dataset_version`` and ``changes`` replacing single fields.
    """
    from asl_recognition.store import get_store
    from asl_recognition.store.base import MANIFEST_NAME, check_manifest_format

    if dataset_version is not None:
        changes["dataset_version"] = dataset_version
    opts = settle(PublishLandmarksOptions, settings, **changes)
    name, asl_name = opts.name, opts.asl_name
    min_detection, min_presence = opts.min_detection, opts.min_presence
    store = get_store()
    asl = store.version_for(asl_name, opts.dataset_version)
    # The manifest alone: the table is measured on the raw images, never on ASL's copies.
    manifest = json.loads(store.local_file(asl, MANIFEST_NAME).read_text())
    check_manifest_format(manifest, f"dataset {asl_name} {asl.version} ({asl.id})")
    landmarker = HandLandmarker(min_detection=min_detection, min_presence=min_presence)
    fp = fingerprint(asl.id, verify_models(), landmarker.settings())
    existing = store.reusable(name, [f"fingerprint:{fp}"])
    if existing is not None:
        return _outputs(existing, reused=True)
    raw_ids = sorted({item["raw_dataset_id"] for item in manifest_items(manifest)})
    raw_roots = {rid: store.local_copy(store.get(dataset_id=rid)) for rid in raw_ids}
    table = extract_table(manifest, raw_roots, landmarker, progress)
    summary = summarise(table)
    summary["few_hands"] = few_hands(table, list(manifest["classes"]))
    warn_few_hands(summary["few_hands"], f"{name} of {asl_name} {asl.version}")
    # A folder of this run's own: two runs measuring one version at once would otherwise rewrite
    # the files the other is hashing into the store. It outlives the task: ClearML uploads
    # logged images after this returns.
    stage = run_report_dir(f"{name}/{fp}")
    stage.mkdir(parents=True)
    table.to_csv(stage / TABLE, index=False)
    (stage / SUMMARY).write_text(json.dumps(summary, indent=1))
    plots = [
        plot_found_rates(summary, stage / "hand_found_rate.png"),
        plot_preview(table, raw_roots, stage / "landmark_preview.png"),
    ]
    files = {path.name: path for path in (stage / TABLE, stage / SUMMARY, *plots)}
    version = store.create(
        name,
        files,
        parents=[asl.id, *raw_ids],
        metadata={
            "fingerprint": fp,
            "asl_dataset_id": asl.id,
            "classes": manifest["classes"],
            "min_detection": min_detection,
            "min_presence": min_presence,
            "detector": landmarker.settings(),
            "hand_found_rate": summary["hand_found_rate"],
            "few_hands": summary["few_hands"],
            "report": stage.relative_to(workspace()).as_posix(),
        },
        tags=[f"fingerprint:{fp}", "landmarks"],
        description=f"hand landmarks of {asl_name} {asl.version} ({asl.id})",
    )
    _log(logger, upload, summary, plots)
    return _outputs(version, reused=version.reused)


def _log(logger: Logger | None, upload: Uploader | None, summary: dict, plots: list[Path]) -> None:
    if logger is not None:
        logger.report_single_value("hand_found_rate", summary["hand_found_rate"])
        for split, counts in summary["per_split"].items():
            rate = counts["found"] / max(1, counts["images"])
            logger.report_single_value(f"hand_found_rate {split}", rate)
        few = summary.get("few_hands", {})
        logger.report_single_value("classes with too few hands", len(few))
        if few:
            rows = [["class", "train photos with a hand"], *([c, n] for c, n in few.items())]
            logger.report_table(
                title="classes with too few hands", series="train", iteration=0, table_plot=rows
            )
        for plot in plots:
            logger.report_image(title="landmarks", series=plot.stem, local_path=str(plot))
    if upload is not None:
        upload("landmark_summary", summary)
        for plot in plots:
            upload(plot.name, str(plot))


def _outputs(version: Any, reused: bool) -> dict[str, Any]:
    return {
        "landmarks_id": version.id,
        "landmarks_version": version.version,
        "hand_found_rate": version.metadata.get("hand_found_rate"),
        "reused": reused,
    }


def load_table(dataset_version: str = "latest", name: str = "ASL_landmarks") -> tuple[Any, dict]:
    """The landmark table and the version's metadata (for training)."""
    import pandas as pd

    from asl_recognition.store import get_store
    from asl_recognition.store.base import DatasetIntegrityError

    store = get_store()
    version = store.version_for(name, dataset_version)
    text = {name: str for name in (*INFO_COLUMNS, "reason", "handedness")}
    path = store.local_copy(version) / TABLE
    try:
        table = pd.read_csv(path, dtype=text)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        # not UTF-8, not CSV, not there: one line naming the file, not a pandas traceback
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DatasetIntegrityError(f"{path} is not a readable landmark table: {reason}") from None
    return table, {"id": version.id, **version.metadata}

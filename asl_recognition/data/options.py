"""The options of the data tasks, declared once (see :mod:`asl_recognition.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from asl_recognition.data.run_folders import check_report_name
from asl_recognition.data.sources import DEFAULT_SIGNER_PATTERN
from asl_recognition.data.split import check_split
from asl_recognition.image_size import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from asl_recognition.options import MAX_SEED, option

GROUPINGS = ("frame", "phash", "none", "signer", "source")


@dataclass
class ValidateRawOptions:
    """Validate folders/.zips of ASL images with Great Expectations and publish ASL_raw."""

    source: list[str] = option(
        [],
        "folder <root>/<CLASS>/*.jpg or a .zip of it; several merge into one version, "
        "NAME=PATH names one (empty: $ASL_RAW, else data/sample)",
        metavar="[NAME=]PATH",
        path=True,
    )
    min_per_class: int | None = option(
        None,
        "minimum valid images per class; below it the run fails "
        "(empty: the value in validation/asl_raw_suite.json)",
        low=0,
    )
    report_dir: str | None = option(
        None,
        "where report.json, GX results, Data Docs and plots go (empty: a folder of this run's "
        "own, workspace/reports/<name>/<UTC time>-<random>)",
        path=True,
        written=True,
    )
    name: str = option("ASL_raw", "dataset name to publish", check=check_report_name)
    source_name: str | None = option(
        None, "name of a single bare --source PATH (empty: its folder name)"
    )
    workers: int | None = option(None, "scan processes (empty: min(2, CPUs))", low=1)
    tags: list[str] = option(
        [], "extra tags on a new ASL_raw version (the pipeline adds asl-pipeline)"
    )


@dataclass
class PublishDatasetOptions:
    """Split ASL_raw without leakage, resize once and publish ASL (parents ASL_raw)."""

    raw_version: list[str] = option(
        ["latest"],
        "ASL_raw dataset id(s), version string or 'latest'; several are merged, all parents",
    )
    image_size: int = option(
        64,
        "output side in pixels (square, RGB)",
        low=min(MIN_IMAGE_SIZE.values()),
        high=MAX_IMAGE_SIZE,
    )
    split: list[float] = option(
        [0.7, 0.15, 0.15],
        "train,val,test fractions (normalised to sum 1; val and test must not be empty)",
        low=0.0,
        metavar="TRAIN,VAL,TEST",
        check=check_split,
    )
    group_by: str = option(
        "frame",
        "frame: frame-number blocks (phash clusters for names without frames); phash: "
        "near-duplicate clusters; none: per-image random split (leaky); signer: each signer "
        "in one split; source: each source in one split",
        choices=GROUPINGS,
    )
    signer_pattern: str = option(
        DEFAULT_SIGNER_PATTERN,
        "regex finding the signer id in a file name (first group, else the match)",
    )
    holdout_source: list[str] = option(
        [], "sources held out entirely in the 'holdout' split (scored per group)", metavar="NAME"
    )
    holdout_group: list[str] = option(
        [],
        "SOURCE:SIGNER held out of train/val/test, e.g. massey:hand4 (globs allowed; a bare "
        "SIGNER means any source)",
        metavar="SOURCE:SIGNER",
    )
    seed: int = option(0, "seed of the group assignment", low=0, high=MAX_SEED)
    block_frames: int = option(150, "frames per block for --group-by frame", low=1)
    edge_frames: int = option(
        3, "frames this close across a block edge are kept in one group", low=0
    )
    phash_threshold: int = option(
        2, "perceptual-hash Hamming distance at or below which images are near duplicates", low=0
    )
    name: str = option("ASL", "dataset name to publish")
    raw_name: str = option("ASL_raw", "raw dataset name to read")
    workers: int | None = option(None, "preprocessing processes (empty: min(2, CPUs))", low=1)


@dataclass
class PublishLandmarksOptions:
    """Measure hand landmarks on every image of an ASL version and publish ASL_landmarks."""

    dataset_version: str = option("latest", "ASL dataset id, version or 'latest'")
    name: str = option("ASL_landmarks", "dataset name to publish")
    asl_name: str = option("ASL", "ASL dataset name to read")
    min_detection: float = option(
        0.1, "palm detector score below which no hand is found", low=0.0, high=1.0
    )
    min_presence: float = option(
        0.5, "landmark model hand-presence score below which no hand is found", low=0.0, high=1.0
    )

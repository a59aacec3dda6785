"""Hand-found rate per image source and milliseconds per image per stage of the hand landmarker.

    python bench/bench_hands.py [--kaggle-per-class 10] [--per-letter 0] [--variant full]
                                [--out bench/results/bench_hands.json]

Sources (``../shared/data``, each skipped when absent): Kaggle sample (``--kaggle-per-class``
frames of each of the 29 classes, spread over the 200), Massey crops, Roboflow letters,
longhongvo23 webcam (all files, or ``--per-letter`` of each letter). Stages, timed serially on
one thread: decode (the project's bounded decoder), detector (letterbox, palm model, anchors,
NMS), landmarks (rotated crop, landmark model, mapping back; only on photos with a palm).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from bench_report import publish  # noqa: E402

from asl_recognition.hands import HandLandmarker, ensure_models  # noqa: E402
from asl_recognition.hands.landmarker import VARIANTS  # noqa: E402
from asl_recognition.imageio import load_rgb  # noqa: E402
from asl_recognition.options import build_parser as build_options_parser  # noqa: E402
from asl_recognition.options import option, parse  # noqa: E402
from asl_recognition.paths import SHARED_DATA  # noqa: E402

DESCRIPTION = __doc__.splitlines()[0]

SOURCES = ("asl_kaggle_sample", "asl_external_massey", "asl_roboflow_letters",
           "asl_webcam_longhongvo23")  # fmt: skip
MEDIAPIPE_FOUND = {  # mediapipe 0.10.21 itself, min_detection_confidence 0.3, same folders
    "asl_kaggle_sample": 0.76,
    "asl_external_massey": 0.66,
    "asl_roboflow_letters": 0.87,
    "asl_webcam_longhongvo23": 0.89,
}


def pick(root: Path, per_folder: int) -> list[Path]:
    """Every file of each class folder, or ``per_folder`` of them spread evenly."""
    paths: list[Path] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        if per_folder and len(files) > per_folder:
            step = len(files) / per_folder
            files = [files[int(i * step)] for i in range(per_folder)]
        paths += files
    return paths


def measure(landmarker: HandLandmarker, paths: list[Path]) -> dict[str, float]:
    """Found rate, letters-only found rate and per-stage milliseconds over ``paths``."""
    times: dict[str, list[float]] = {"decode": [], "detector": [], "landmarks": []}
    found = letters = letters_found = 0
    for path in paths:
        t0 = time.perf_counter()
        with load_rgb(path) as img:
            rgb = np.asarray(img)
        t1 = time.perf_counter()
        palms = landmarker.find_palms(rgb)
        t2 = time.perf_counter()
        result = landmarker.landmarks(rgb, palms[0]) if palms else None
        if palms:
            times["landmarks"].append(time.perf_counter() - t2)
        times["decode"].append(t1 - t0)
        times["detector"].append(t2 - t1)
        is_letter = len(path.parent.name) == 1
        found += result is not None
        letters += is_letter
        letters_found += is_letter and result is not None
    row = {"images": len(paths), "found": found / max(1, len(paths))}
    row["letters_found"] = letters_found / max(1, letters)
    for stage, values in times.items():
        row[f"{stage}_ms"] = 1e3 * statistics.median(values) if values else float("nan")
    return row


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = [
        "| source | images | hand found | letters only | mediapipe (note) "
        "| decode ms | detector ms | landmarks ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['images']} | {r['found']:.0%} | {r['letters_found']:.0%} "
            f"| {MEDIAPIPE_FOUND.get(name, float('nan')):.0%} | {r['decode_ms']:.1f} "
            f"| {r['detector_ms']:.1f} | {r['landmarks_ms']:.1f} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class BenchHandsOptions:
    """How many photos of each source, which landmark model, where the results go."""

    kaggle_per_class: int = option(10, "Kaggle sample frames per class", low=0)
    per_letter: int = option(0, "files per letter of the other sources (0: every file)", low=0)
    variant: str = option("full", "hand landmark model", choices=VARIANTS)
    out: str = option("bench/results/bench_hands.json", "JSON results file")


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`BenchHandsOptions`."""
    return build_options_parser(BenchHandsOptions, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    args = parse(BenchHandsOptions, argv, DESCRIPTION)
    landmarker = HandLandmarker(ensure_models(), variant=args.variant)
    rows = {}
    for name in SOURCES:
        root = SHARED_DATA / name
        if not root.is_dir():
            print(f"skip {name}: {root} is absent")
            continue
        per = args.kaggle_per_class if name == "asl_kaggle_sample" else args.per_letter
        rows[name] = measure(landmarker, pick(root, per))
        print(name, rows[name], flush=True)
    result = {"variant": args.variant, "min_detection": 0.3, "min_presence": 0.5, "rows": rows}
    publish(result, table(rows), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

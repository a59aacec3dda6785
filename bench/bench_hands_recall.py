"""Hand-found rate per source and false hands on ``nothing``: the detector before and after.

    python bench/bench_hands_recall.py [--per-class 20] [--levers]
                                       [--out bench/results/bench_hands_recall.json]

Sets (``../shared/data``, each skipped when absent): Kaggle sample (``--per-class`` frames of each
letter/del/space, spread over the 200), Massey crops, Roboflow phone photos and longhongvo23 webcam
frames (``--per-class`` of each letter; 0: every file), the Kaggle test images but ``nothing``,
and, for false hands, every Kaggle ``nothing`` frame. Each detector runs on the same decoded
photos, serially on one thread; ms/image is the mean ``detect`` time (decoding excluded).

Detectors: ``before`` (one pass, border 0.15, palm score 0.3: the detector up to this bench) and
``after`` (``HandLandmarker()``'s defaults). ``--levers`` adds each lever on its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from bench_report import publish  # noqa: E402

from asl_recognition.hands import DEFAULT_PASSES, HandLandmarker, Pass, ensure_models  # noqa: E402
from asl_recognition.imageio import load_rgb  # noqa: E402
from asl_recognition.options import build_parser as build_options_parser  # noqa: E402
from asl_recognition.options import option, parse  # noqa: E402
from asl_recognition.paths import SHARED_DATA  # noqa: E402

DESCRIPTION = __doc__.splitlines()[0]

NOTHING = "nothing"
FOLDERS = {
    "kaggle": "asl_kaggle_sample",
    "massey": "asl_external_massey",
    "roboflow": "asl_roboflow_letters",
    "webcam": "asl_webcam_longhongvo23",
}
BEFORE = {"min_detection": 0.3, "passes": (Pass(0.15, 1.0),), "recrop": False}
LEVERS = {  # cumulative from ``before`` down to the defaults, then one alternative
    "no border (mediapipe's framing)": {"min_detection": 0.3, "passes": (Pass(0.0),)},
    "palm score 0.1": {"passes": (Pass(0.15),)},
    "+ border 0.6 pass": {"passes": DEFAULT_PASSES[:2]},
    "+ gamma 0.35 passes": {"passes": DEFAULT_PASSES[:4]},
    "+ tint passes for gray photos (= after)": {},
    "lite models, default passes": {"variant": "lite"},
}


def spread(files: list[Path], count: int) -> list[Path]:
    """``count`` of ``files`` spread evenly over their name order (all of them for 0)."""
    if not count or len(files) <= count:
        return files
    step = len(files) / count
    return [files[int(i * step)] for i in range(count)]


def hand_sets(per_class: int) -> dict[str, list[Path]]:
    """Set name -> photos; every set but ``nothing`` shows one hand per photo."""
    sets: dict[str, list[Path]] = {}
    for name, folder in FOLDERS.items():
        root = SHARED_DATA / folder
        if not root.is_dir():
            print(f"skip {name}: {root} is absent")
            continue
        classes = sorted(p for p in root.iterdir() if p.is_dir() and p.name != NOTHING)
        sets[name] = [f for c in classes for f in spread(sorted(c.iterdir()), per_class)]
    test = SHARED_DATA / "asl_kaggle_test"
    if test.is_dir():
        sets["kaggle test"] = sorted(p for p in test.iterdir() if not p.name.startswith(NOTHING))
    empty = SHARED_DATA / FOLDERS["kaggle"] / NOTHING
    if empty.is_dir():
        sets[NOTHING] = sorted(empty.iterdir())
    return sets


class CountingLandmarker(HandLandmarker):
    """The real landmarker, counting the passes it runs (a cost figure that a loaded machine
    does not blur, unlike milliseconds)."""

    passes_run = 0

    def _detect_once(self, rgb: np.ndarray, step: Pass):  # noqa: ANN202 - as the parent's
        self.passes_run += 1
        return super()._detect_once(rgb, step)


def score(landmarker: CountingLandmarker, photos: list[np.ndarray]) -> dict[str, float]:
    """Share of photos with a hand found, mean milliseconds and passes per ``detect``."""
    found, landmarker.passes_run, start = 0, 0, time.perf_counter()
    for rgb in photos:
        found += landmarker.detect(rgb) is not None
    seconds, count = time.perf_counter() - start, max(1, len(photos))
    return {
        "found": found / count,
        "ms": 1e3 * seconds / count,
        "passes": landmarker.passes_run / count,
    }


def run(detectors: dict[str, dict], sets: dict[str, list[Path]]) -> dict[str, dict]:
    """Detector name -> set name -> {found, ms}; photos decoded once."""
    photos = {}
    for name, paths in sets.items():
        photos[name] = []
        for path in paths:
            with load_rgb(path) as img:
                photos[name].append(np.asarray(img))
    models = ensure_models()
    rows: dict[str, dict] = {}
    for label, kwargs in detectors.items():
        landmarker = CountingLandmarker(models, **kwargs)
        rows[label] = {name: score(landmarker, images) for name, images in photos.items()}
        rows[label]["settings"] = landmarker.settings()
        print(label, {k: v for k, v in rows[label].items() if k != "settings"}, flush=True)
    return rows


def table(rows: dict[str, dict], sets: dict[str, list[Path]]) -> str:
    """One line per set (before -> after), then one line per detector over all hand sets."""
    before, after = rows["before"], rows["after"]
    lines = [
        "| set | photos | hand found before | after | ms/image before | after "
        "| passes/image before | after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, paths in sets.items():
        label = "false hands on `nothing`" if name == NOTHING else name
        lines.append(
            f"| {label} | {len(paths)} | {before[name]['found']:.1%} | {after[name]['found']:.1%} "
            f"| {before[name]['ms']:.0f} | {after[name]['ms']:.0f} "
            f"| {before[name]['passes']:.2f} | {after[name]['passes']:.2f} |"
        )
    hands = [n for n in sets if n != NOTHING]
    lines += [
        "",
        "| detector | "
        + " | ".join(hands)
        + f" | {NOTHING} (false) | ms/hand photo | passes/hand photo |",
        "|---|" + "---|" * (len(hands) + 3),
    ]
    total = max(1, sum(len(paths) for paths in sets.values()))
    for label, row in rows.items():
        ms, passes = (
            sum(row[n][key] * len(sets[n]) for n in sets) / total for key in ("ms", "passes")
        )
        rates = " | ".join(f"{row[n]['found']:.1%}" for n in hands)
        false = row.get(NOTHING, {}).get("found", float("nan"))
        lines.append(f"| {label} | {rates} | {false:.1%} | {ms:.0f} | {passes:.2f} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class BenchHandsRecallOptions:
    """How many photos of each class, whether each lever runs too, where the results go."""

    per_class: int = option(20, "photos per class of each source (0: every file)", low=0)
    levers: bool = option(False, "also measure each lever on its own")
    out: str = option("bench/results/bench_hands_recall.json", "JSON results file")


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`BenchHandsRecallOptions`."""
    return build_options_parser(BenchHandsRecallOptions, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    args = parse(BenchHandsRecallOptions, argv, DESCRIPTION)
    sets = hand_sets(args.per_class)
    if not sets:
        print(f"bench_hands_recall.py: error: no source under {SHARED_DATA}", file=sys.stderr)
        return 1
    detectors = {"before": BEFORE, "after": {}}
    if args.levers:  # the defaults are already measured as "after"
        detectors.update({k: v for k, v in LEVERS.items() if v})
    rows = run(detectors, sets)
    counts = {name: len(paths) for name, paths in sets.items()}
    result = {"per_class": args.per_class, "photos": counts, "rows": rows}
    publish(result, table(rows, sets), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

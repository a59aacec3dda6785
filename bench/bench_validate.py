"""Validation scan throughput of the project's scan against a bare Pillow loop, in the same run.

    python bench/bench_validate.py [--source DIR] [--workers N] [--rounds 2] [--no-gx]
                                   [--out bench/results/bench_validate.json]

The project's ``scan_source`` does per file: sha256, a header read, a bounded full decode
(EXIF transpose, RGB) and a perceptual hash. The bare loop only opens, loads and converts each
image to RGB, with the same number of worker processes under the same rule (a pool only from
``POOL_MIN_FILES`` files on). They alternate (scan, bare, scan, bare) so machine drift hits both;
the ratio is of the medians. A per-file cost breakdown of the scan's steps and the Great
Expectations suite time (on the scan table, as ``validate_raw`` runs it) are reported apart.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from asl_recognition.options import build_parser as build_options_parser  # noqa: E402
from asl_recognition.options import option, parse  # noqa: E402

BREAKDOWN_FILES = 300
RESULTS = Path(__file__).resolve().parent / "results"
DESCRIPTION = __doc__.split("\n\n")[0]


def bare_one(path: str) -> int:
    """The minimum any image reader does: open, decode, convert to RGB."""
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB").size[0]


def bare_scan(paths: list[str], workers: int, pool_min: int) -> None:
    if workers <= 1 or len(paths) < pool_min:
        for path in paths:
            bare_one(path)
        return
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        chunk = max(16, len(paths) // (workers * 8))  # the scan's own chunking
        list(pool.map(bare_one, paths, chunksize=chunk))


def breakdown(paths: list[str]) -> dict[str, float]:
    """Milliseconds per file of each step the scan takes, measured serially on a subset."""
    import imagehash

    from asl_recognition.imageio import load_rgb, read_header

    steps = {"sha256": 0.0, "header": 0.0, "decode_rgb": 0.0, "phash": 0.0, "bare_pillow": 0.0}
    for path in paths:
        t0 = time.perf_counter()
        hashlib.sha256(Path(path).read_bytes()).hexdigest()
        t1 = time.perf_counter()
        read_header(path).close()
        t2 = time.perf_counter()
        image = load_rgb(path)
        t3 = time.perf_counter()
        str(imagehash.phash(image))
        t4 = time.perf_counter()
        bare_one(path)
        t5 = time.perf_counter()
        for key, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            steps[key] += dt
    return {k: v * 1e3 / max(1, len(paths)) for k, v in steps.items()}


def gx_seconds(table) -> dict[str, float]:
    """GX import and suite run on the scan table, as validate_raw runs them (no Data Docs)."""
    from asl_recognition.classes import CLASSES
    from asl_recognition.data.rules import apply_rules
    from asl_recognition.data.validate import (
        class_counts_frame,
        files_frame,
        load_suite_config,
        run_gx,
    )

    t0 = time.perf_counter()
    import great_expectations  # noqa: F401

    t1 = time.perf_counter()
    config = load_suite_config(overrides={"classes": list(CLASSES)})
    params = config["params"]
    ruled = apply_rules(table, CLASSES, params["min_side"], params["max_side"])
    frames = {
        "asl_raw_files": files_frame(ruled),
        "asl_raw_class_counts": class_counts_frame(ruled),
    }
    config["suites"] = {k: v for k, v in config["suites"].items() if k in frames}
    summary, _ = run_gx(frames, config, None)
    t2 = time.perf_counter()
    return {"import_s": t1 - t0, "suites_s": t2 - t1, "success": bool(summary["success"])}


def markdown(result: dict) -> str:
    c, runs = result["config"], result["runs"]
    lines = [
        f"{c['files']} files ({c['images']} images) from {c['source_name']}, "
        f"{c['workers']} worker(s), {c['rounds']} interleaved rounds.",
        "",
        "| reader | files/s (median) | rounds |",
        "|---|---|---|",
        f"| project scan (sha256 + header + bounded decode + phash) | "
        f"{result['scan_files_per_s']:.0f} | "
        + ", ".join(f"{v:.0f}" for v in runs["scan"])
        + " |",
        f"| bare Pillow loop (open + load + RGB) | {result['bare_files_per_s']:.0f} | "
        + ", ".join(f"{v:.0f}" for v in runs["bare"])
        + " |",
        "",
        f"Ratio scan / bare: **{result['ratio']:.2f}**.",
        "",
        "| scan step | ms/file (serial, " + f"{result['breakdown_files']} files) |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.2f} |" for k, v in result["breakdown_ms_per_file"].items()]
    if result.get("gx"):
        g = result["gx"]
        lines += [
            "",
            f"Great Expectations: import {g['import_s']:.1f} s, suites on the {c['files']}-row "
            f"table {g['suites_s']:.2f} s (success: {g['success']}).",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class BenchValidateOptions:
    """The image folder, the readers' workers and rounds, where the results go."""

    source: str | None = option(
        None,
        "image folder <CLASS>/* (default: ../shared/data/asl_kaggle_sample if present, "
        "else data/sample)",
    )
    workers: int | None = option(
        None, "worker processes for both readers (default: the scan's own default)", low=1
    )
    rounds: int = option(2, "interleaved rounds per reader", low=1)
    gx: bool = option(True, "time the GX suite too (--no-gx skips it)")
    out: str = option(str(RESULTS / "bench_validate.json"), "JSON results file")


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`BenchValidateOptions`."""
    return build_options_parser(BenchValidateOptions, DESCRIPTION)


def default_source() -> Path:
    """The Kaggle sample in ``../shared/data`` when present, else the bundled sample."""
    from asl_recognition.paths import SAMPLE_DATA, SHARED_DATA

    shared = SHARED_DATA / "asl_kaggle_sample"
    return shared if shared.is_dir() else SAMPLE_DATA


def run(args: BenchValidateOptions) -> dict:
    from asl_recognition.data.per_file import POOL_MIN_FILES
    from asl_recognition.data.scan import is_litter, list_files, scan_source
    from asl_recognition.workers import default_workers

    root = Path(args.source or default_source()).resolve()
    workers = args.workers or default_workers()
    if not root.is_dir():
        raise SystemExit(f"--source {root} is not a folder")
    files = list_files(root)
    images = [str(root / f) for f in files if not is_litter(f)]
    runs: dict[str, list[float]] = {"scan": [], "bare": []}
    table = None
    for r in range(args.rounds):
        t0 = time.perf_counter()
        table = scan_source(root, workers=workers, progress=False).table
        runs["scan"].append(len(files) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        bare_scan(images, workers, POOL_MIN_FILES)
        runs["bare"].append(len(images) / (time.perf_counter() - t0))
        print(
            f"round {r + 1}: scan {runs['scan'][-1]:.0f} files/s, "
            f"bare {runs['bare'][-1]:.0f} files/s",
            flush=True,
        )
    subset = images[:: max(1, len(images) // BREAKDOWN_FILES)][:BREAKDOWN_FILES]
    scan = statistics.median(runs["scan"])
    bare = statistics.median(runs["bare"])
    return {
        "config": {
            "source": str(root),
            "source_name": root.name,
            "files": len(files),
            "images": len(images),
            "workers": workers,
            "rounds": args.rounds,
            "pool_min_files": POOL_MIN_FILES,
        },
        "runs": runs,
        "scan_files_per_s": scan,
        "bare_files_per_s": bare,
        "ratio": scan / bare,
        "breakdown_files": len(subset),
        "breakdown_ms_per_file": breakdown(subset),
        "gx": gx_seconds(table) if args.gx else None,
    }


def main(argv: list[str] | None = None) -> int:
    from bench_report import publish

    args = parse(BenchValidateOptions, argv, DESCRIPTION)
    result = run(args)
    publish(result, markdown(result), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

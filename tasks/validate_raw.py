"""ClearML task: validate a folder or .zip of ASL images (GX) and publish it as ASL_raw.

Run from the repo root: ``python tasks/validate_raw.py --source data/sample``. Exits non-zero
with a one-line reason only when the data is unusable (a class missing or below the minimum,
or nothing readable); bad files are otherwise quarantined and listed in report.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.paths import SAMPLE_DATA
from asl_recognition.tracking import init_task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--source",
        default=os.environ.get("ASL_RAW", str(SAMPLE_DATA)),
        help="folder <root>/<CLASS>/*.jpg or a .zip of it (env ASL_RAW overrides the default)",
    )
    parser.add_argument(
        "--min-per-class",
        type=int,
        default=None,
        help="minimum valid images per class; below it the run fails "
        "(default: the value in validation/asl_raw_suite.json)",
    )
    parser.add_argument(
        "--report-dir",
        default=None,
        help="where report.json, GX results, Data Docs and plots go "
        "(default: <workspace>/reports/<name>)",
    )
    parser.add_argument("--name", default="ASL_raw", help="dataset name to publish")
    parser.add_argument(
        "--source-name",
        default=None,
        help="human name of the source recorded in the dataset metadata (default: folder name)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="scan processes (default: min(2, CPUs))"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ctx = init_task("ASL", "validate_raw", params=vars(args), task_type="data_processing")
    from asl_recognition.data.raw import validate_raw
    from asl_recognition.data.safe_extract import UnsafeArchiveError

    p = ctx.params
    try:
        result = validate_raw(
            source=p["source"],
            min_per_class=p["min_per_class"],
            report_dir=p["report_dir"],
            name=p["name"],
            source_name=p["source_name"],
            workers=p["workers"],
            logger=ctx.logger,
            upload=ctx.upload_artifact,
        )
    except (UnsafeArchiveError, FileNotFoundError, ValueError) as exc:
        ctx.close()
        print(f"refused source: {exc}", file=sys.stderr)
        return 2
    ctx.record_outputs(
        raw_dataset_id=result["raw_dataset_id"],
        report_path=result["report_path"],
        success=result["success"],
        valid=result["valid"],
        quarantined=result["quarantined"],
    )
    ctx.close()
    if not result["usable"]:
        print(f"unusable dataset: {result['unusable_reason']}", file=sys.stderr)
        return 2
    print(
        f"{p['name']} {result['raw_dataset_id']}: {result['valid']} valid, "
        f"{result['quarantined']} quarantined, report {result['report_path']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

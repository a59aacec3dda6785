"""ClearML task: validate one or several folders/.zips of ASL images (GX) and publish ASL_raw.

``--source kaggle=../shared/data/asl_kaggle_sample massey=../shared/data/asl_external_massey``
merges sources into ONE raw version: each file is stored under ``<name>/<CLASS>/<file>`` and
tagged with its source name; report.json holds a per-source table and
class_histogram_per_source.png a histogram per source. The minimum per class applies to the
merged set, so a source may lack classes. Exits 2 with a one-line reason when the data is
unusable (a class missing or below the minimum, nothing readable) or the options are malformed;
bad files are otherwise quarantined and listed in report.json.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.data.options import ValidateRawOptions
from asl_recognition.options import parse
from asl_recognition.paths import SAMPLE_DATA
from asl_recognition.tracking import init_task

RAW_ENV = "ASL_RAW"


def default_sources() -> list[str]:
    """``$ASL_RAW`` (one spec or several, comma-separated), else the bundled sample."""
    return [s for s in os.environ.get(RAW_ENV, str(SAMPLE_DATA)).split(",") if s]


def main(argv: list[str] | None = None) -> int:
    options = parse(ValidateRawOptions, argv, __doc__)
    options.source = options.source or default_sources()
    ctx = init_task("ASL", "validate_raw", options, task_type="data_processing")
    opts: ValidateRawOptions = ctx.options
    from asl_recognition.data.raw import validate_raw
    from asl_recognition.data.safe_extract import UnsafeArchiveError
    from asl_recognition.data.sources import SourceSpecError

    try:
        result = validate_raw(
            source=opts.source,
            min_per_class=opts.min_per_class,
            report_dir=opts.report_dir,
            name=opts.name,
            source_name=opts.source_name,
            workers=opts.workers,
            logger=ctx.logger,
            upload=ctx.upload_artifact,
            tags=opts.tags,
        )
    except (SourceSpecError, UnsafeArchiveError, FileNotFoundError, ValueError) as exc:
        ctx.fail(f"refused source: {exc}")
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
        f"{opts.name} {result['raw_dataset_id']}: {result['valid']} valid, "
        f"{result['quarantined']} quarantined, report {result['report_path']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

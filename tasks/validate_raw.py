"""ClearML task: validate one or several folders/.zips of ASL images (GX) and publish ASL_raw.

``--source kaggle=../shared/data/asl_kaggle_sample massey=../shared/data/asl_external_massey``
merges sources into ONE raw version: each file is stored under ``<name>/<CLASS>/<file>`` and
tagged with its source name; report.json holds a per-source table and
class_histogram_per_source.png a histogram per source. The minimum per class applies to the
merged set, so a source may lack classes. Exits 2 with a one-line reason when the data is
unusable (a class missing or below the minimum, nothing readable) or the options are malformed;
bad files are otherwise quarantined and listed in report.json. Each run writes its report to a
folder of its own, ``reports/ASL_raw/<UTC time>-<random>/`` (``--report-dir`` overrides it), and
extracts a zip into a folder of its own, so runs on one workspace may overlap.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.data.options import ValidateRawOptions
from asl_recognition.data.safe_extract import UnsafeArchiveError
from asl_recognition.data.sources import SourceSpecError, default_raw_sources
from asl_recognition.tracking import TaskContext, task_entry
from asl_recognition.workers import WorkerLostError


def default_sources(options: ValidateRawOptions) -> None:
    """No ``--source``: ``$ASL_RAW`` (one spec or several, comma-separated), else the sample.

    Applied after ``connect`` (``task_entry``'s ``fill_defaults``) where the task runs: the task
    records the empty value, not the launching machine's path, and an empty ``Args/source``
    a controller passes gets the default instead of "no --source given".
    """
    if options.source:
        return
    options.source = default_raw_sources()
    print(f"validate_raw: no --source given, using {', '.join(options.source)}")


@task_entry(
    ValidateRawOptions,
    task_type="data_processing",
    refused=(SourceSpecError, UnsafeArchiveError, FileNotFoundError, ValueError, WorkerLostError),
    fill_defaults=default_sources,
)
def main(ctx: TaskContext) -> dict:
    from asl_recognition.data.raw import validate_raw

    opts: ValidateRawOptions = ctx.options
    result = validate_raw(settings=opts, logger=ctx.logger, upload=ctx.upload_artifact)
    if result["usable"]:
        ctx.summary = (
            f"{opts.name} {result['raw_dataset_id']}: {result['valid']} valid, "
            f"{result['quarantined']} quarantined, report {result['report_path']}"
        )
    else:
        print(f"unusable dataset: {result['unusable_reason']}", file=sys.stderr)
        ctx.exit_code = 2
    keys = ("raw_dataset_id", "report_path", "success", "valid", "quarantined")
    return {key: result[key] for key in keys}


if __name__ == "__main__":
    sys.exit(main())

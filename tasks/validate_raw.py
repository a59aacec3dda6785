"""ClearML task: validate one or several folders/.zips of ASL images (GX) and publish ASL_raw.

Run from the repo root: ``python tasks/validate_raw.py --source data/sample``, or merge sources
into ONE raw version: ``--source kaggle=../shared/data/asl_kaggle_sample --source
massey=../shared/data/asl_external_massey``. With several sources each file is stored under
``<name>/<CLASS>/<file>`` and tagged with its source name; report.json holds a per-source table
and class_histogram_per_source.png a histogram per source. The minimum per class applies to the
merged set, so a source may lack classes. Exits 2 with a one-line reason when the data is
unusable (a class missing or below the minimum, nothing readable) or the options are malformed;
bad files are otherwise quarantined and listed in report.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.paths import SAMPLE_DATA
from asl_recognition.tracking import init_task


class _Sources(argparse.Action):
    """Repeatable --source whose first use replaces the default (append would keep it)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        current = getattr(namespace, self.dest)
        given = getattr(namespace, "_sources_given", False)
        setattr(namespace, self.dest, (current if given else []) + [values])
        namespace._sources_given = True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--source",
        action=_Sources,
        default=os.environ.get("ASL_RAW", str(SAMPLE_DATA)),
        metavar="[NAME=]PATH",
        help="folder <root>/<CLASS>/*.jpg or a .zip of it; repeat to merge sources into one "
        "version, NAME=PATH names one (default name: the folder name); "
        "env ASL_RAW overrides the default",
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
        help="name of a single --source given as a bare PATH (default: its folder name); "
        "with several sources use NAME=PATH",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="scan processes (default: min(2, CPUs))"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    from asl_recognition.data.sources import SourceSpecError, format_sources, parse_sources

    if isinstance(params["source"], list):  # one parameter: the spec, or a JSON list of specs
        params["source"] = format_sources(params["source"])
    try:  # malformed NAME=PATH or duplicate names: refuse before starting a task
        parse_sources(params["source"])
    except SourceSpecError as exc:
        print(f"refused source: {exc}", file=sys.stderr)
        return 2
    ctx = init_task("ASL", "validate_raw", params=params, task_type="data_processing")
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

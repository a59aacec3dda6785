"""ClearML service: start the ASL pipeline whenever a new ``ASL_raw`` dataset version appears.

    python pipelines/trigger_on_new_data.py [--queue services] [--pipeline-queue services]
        [--step-queue default] [--dataset-project ASL/datasets] [--dataset-name ASL_raw]
        [--on-publish] [--poll-minutes 2] [--run-here]

A ``TriggerScheduler`` watches the dataset project. For every new version it launches
``pipelines/asl_pipeline.py --queue ... --raw-version <new id>``: a fresh controller built from
the one DAG, which skips ``validate_raw`` (the version already exists) and trains on it. The
service itself runs on the ``services`` queue (``start_remotely``) or here with ``--run-here``.
Needs a ClearML server; there is nothing to watch without one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.paths import REPO_ROOT
from asl_recognition.tracking import server_configured

PIPELINE_SCRIPT = REPO_ROOT / "pipelines" / "asl_pipeline.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--queue", default="services", help="agent queue the trigger service runs on"
    )
    parser.add_argument(
        "--pipeline-queue",
        default="services",
        help="agent queue each launched pipeline controller runs on (default services)",
    )
    parser.add_argument(
        "--step-queue", default="default", help="agent queue the pipeline steps run on"
    )
    parser.add_argument(
        "--dataset-project",
        default="ASL/datasets",
        help="ClearML project the dataset store writes to (default ASL/datasets)",
    )
    parser.add_argument(
        "--dataset-name", default="ASL_raw", help="dataset whose new versions trigger a run"
    )
    parser.add_argument(
        "--on-publish",
        action="store_true",
        help="fire only on versions whose status is 'published' (default: every finalized one)",
    )
    parser.add_argument(
        "--poll-minutes", type=float, default=2.0, help="how often the service polls the server"
    )
    parser.add_argument(
        "--run-here",
        action="store_true",
        help="run the service loop in this process instead of on --queue",
    )
    return parser


def pipeline_command(dataset_id: str, pipeline_queue: str, step_queue: str) -> list[str]:
    return [
        sys.executable,
        str(PIPELINE_SCRIPT),
        "--queue",
        pipeline_queue,
        "--step-queue",
        step_queue,
        "--raw-version",
        dataset_id,
    ]


def make_launcher(
    pipeline_queue: str,
    step_queue: str,
    runner: Callable[..., Any] = subprocess.run,
) -> Callable[[str], None]:
    """The function the scheduler calls with the new dataset's id."""

    def launch_pipeline(dataset_id: str) -> None:
        command = pipeline_command(dataset_id, pipeline_queue, step_queue)
        print(f"new {dataset_id}: {' '.join(command)}", flush=True)
        runner(command, cwd=REPO_ROOT, check=True)

    return launch_pipeline


def build_scheduler(
    args: argparse.Namespace,
    scheduler_cls: Any = None,
    runner: Callable[..., Any] = subprocess.run,
) -> Any:
    if scheduler_cls is None:
        from clearml.automation import TriggerScheduler as scheduler_cls
    scheduler = scheduler_cls(
        pooling_frequency_minutes=args.poll_minutes,
        sync_frequency_minutes=15,
        force_create_task_name="ASL new raw data -> pipeline",
        force_create_task_project="ASL",
    )
    scheduler.add_dataset_trigger(
        schedule_function=make_launcher(args.pipeline_queue, args.step_queue, runner),
        trigger_project=args.dataset_project,
        trigger_name=args.dataset_name,
        trigger_on_publish=args.on_publish,
        name=f"new {args.dataset_name} version",
        single_instance=False,
    )
    return scheduler


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not server_configured():
        print(
            "trigger_on_new_data: needs a ClearML server (clearml.conf or CLEARML_API_* "
            "variables); without one, run `python pipelines/asl_pipeline.py` after adding data",
            file=sys.stderr,
        )
        return 2
    scheduler = build_scheduler(args)
    if args.run_here:
        scheduler.start()
    else:
        scheduler.start_remotely(queue=args.queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())

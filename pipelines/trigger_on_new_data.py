"""ClearML service: start the ASL pipeline whenever a new ``ASL_raw`` dataset version appears.

A ``TriggerScheduler`` watches every dataset named ``--dataset-name`` (in any project: a project
filter is resolved once, at registration, and would miss projects created later). For every new
finalized version it launches ``pipelines/asl_pipeline.py --mode queue raw_version=<id>``: a
fresh controller built from the one DAG, which skips validate_raw (the version already exists).
Versions made by the pipeline's own validate_raw carry the tag ``asl-pipeline`` and are
ignored, so one upload starts one pipeline. The service runs on the ``services`` queue, or here
with ``--run-here``; under an agent its options are read back from its task. Needs a server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.options import parse
from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.options import PIPELINE_RUN_TAG, TriggerOptions
from asl_recognition.tracking import connect_options, server_configured

PIPELINE_SCRIPT = REPO_ROOT / "pipelines" / "asl_pipeline.py"
TASK_NAME = "ASL new raw data -> pipeline"
# ClearML's own LocalClearmlJob drops these before starting a child: a child that inherits them
# attaches to this service's task (Task.current_task) instead of creating its own controller.
INHERITED_TASK_ENV = ("CLEARML_PROC_MASTER_ID", "TRAINS_PROC_MASTER_ID", "CLEARML_TASK_ID")


def pipeline_command(dataset_id: str, options: TriggerOptions) -> list[str]:
    command = [sys.executable, str(PIPELINE_SCRIPT), "--mode", "queue"]
    command += ["--queue", options.pipeline_queue, "--step-queue", options.step_queue]
    if options.config:
        command += ["--config", options.config]
    return command + [f"raw_version={dataset_id}"]


def child_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the variables that bind a child to our task."""
    env = dict(os.environ if environ is None else environ)
    for name in INHERITED_TASK_ENV:
        env.pop(name, None)
    return env


def make_launcher(
    options: TriggerOptions, runner: Callable[..., Any] = subprocess.run
) -> Callable[[str], None]:
    """The function the scheduler calls with the new dataset's id."""

    def launch_pipeline(dataset_id: str) -> None:
        command = pipeline_command(dataset_id, options)
        print(f"new {dataset_id}: {' '.join(command)}", flush=True)
        runner(command, cwd=REPO_ROOT, env=child_env(), check=True)

    return launch_pipeline


def build_scheduler(
    options: TriggerOptions,
    scheduler_cls: Any = None,
    runner: Callable[..., Any] = subprocess.run,
) -> Any:
    if scheduler_cls is None:
        from clearml.automation import TriggerScheduler as scheduler_cls
    # No force_create_*: the scheduler then runs in the current task (main's Task.init).
    scheduler = scheduler_cls(
        pooling_frequency_minutes=options.poll_minutes, sync_frequency_minutes=15
    )
    scheduler.add_dataset_trigger(
        schedule_function=make_launcher(options, runner),
        trigger_name=options.dataset_name,
        # a "-tag" excludes: the server skips versions the pipeline made itself
        trigger_on_tags=[f"-{PIPELINE_RUN_TAG}"],
        name=f"new {options.dataset_name} version",
        single_instance=False,
    )
    return scheduler


def main(argv: list[str] | None = None) -> int:
    options = parse(TriggerOptions, argv, __doc__)
    if not server_configured():
        print(
            "trigger_on_new_data: needs a ClearML server (clearml.conf or CLEARML_API_* "
            "variables); without one, run `python pipelines/asl_pipeline.py` after adding data",
            file=sys.stderr,
        )
        return 2
    from clearml import Task

    # The scheduler runs in this task; connecting the options here is what lets the copy on the
    # services agent read them back (argv is empty there).
    task = Task.init(project_name="ASL", task_name=TASK_NAME, task_type=Task.TaskTypes.service)
    options = connect_options(task, options)
    scheduler = build_scheduler(options)
    if options.run_here or not Task.running_locally():
        scheduler.start()
    else:
        scheduler.start_remotely(queue=options.queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())

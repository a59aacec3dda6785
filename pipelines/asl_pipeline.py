"""The ASL pipeline: validate_raw -> publish_dataset -> train -> select_best -> build_triton_repo.

The DAG is defined once in ``asl_recognition/pipeline/dag.py``; this script runs it:

  --local-executor   no server (default when none is configured): each step a subprocess with an
                     offline ClearML session, state under <workspace>/pipeline_runs/<run id>;
                     re-running resumes at the failed step.
  --queue NAME       ClearML PipelineController, the controller itself on agent queue NAME
                     (steps on --step-queue, default: the same queue).
  --local            ClearML PipelineController run on this machine against the server; steps
                     run here too unless --step-queue sends them to an agent queue.
  --dry-run          print the controller's steps, parents, overrides and cache flags as JSON.

Pipeline parameters (also editable in the ClearML web UI): see the options below.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.data.sources import split_list, split_name
from asl_recognition.paths import REPO_ROOT, workspace
from asl_recognition.pipeline import clearml_controller
from asl_recognition.pipeline.dag import ASL_DAG, Dag
from asl_recognition.pipeline.local_executor import (
    LocalExecutor,
    StepFailed,
    choose_run,
    list_runs,
)
from asl_recognition.tracking import prepare_environment, server_configured

PATH_PARAMS = ("raw_source", "external", "triton_repo")
RAW_ENV = "ASL_RAW"
DRY_RUN_MARKER = "=== PipelineController DAG ==="


def build_parser(dag: Dag = ASL_DAG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--local-executor",
        action="store_true",
        help="run without a ClearML server (default when none is configured)",
    )
    mode.add_argument("--queue", metavar="NAME", help="run the controller on this agent queue")
    mode.add_argument(
        "--local",
        action="store_true",
        help="run the ClearML controller and its steps on this machine against the server",
    )
    mode.add_argument(
        "--dry-run", action="store_true", help="print the controller DAG as JSON and exit"
    )
    parser.add_argument(
        "--step-queue", metavar="NAME", help="agent queue the steps run on (ClearML modes)"
    )
    params = parser.add_argument_group("pipeline parameters")
    for param in dag.params:
        help_text = f"{param.help} (default: {param.default!r})"
        if param.name == "raw_source":
            help_text += f"; env {RAW_ENV} overrides the default"
        params.add_argument(
            "--" + param.name.replace("_", "-"),
            dest=param.name,
            type=param.type,
            default=None,
            help=help_text,
        )
    local = parser.add_argument_group("local executor")
    local.add_argument(
        "--run-id",
        help="continue (or create) this run; default: resume the latest unfinished run "
        "started with the same parameters, else start a new one",
    )
    local.add_argument(
        "--resume",
        action="store_true",
        help="resume the latest unfinished run with its own stored parameters",
    )
    local.add_argument("--new-run", action="store_true", help="always start a fresh run")
    local.add_argument(
        "--from-step",
        choices=dag.step_names(),
        help="re-run this step and everything after it, reusing the steps before",
    )
    local.add_argument(
        "--no-cache",
        action="store_true",
        help="do not reuse cacheable steps (publish_dataset, train) from earlier runs",
    )
    local.add_argument("--list-runs", action="store_true", help="list local runs and exit")
    return parser


def localise(path: str) -> str:
    """Paths inside the repo stay relative (an agent's checkout has them too); others absolute."""
    resolved = Path(path).expanduser().resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(resolved)


def source_list(value: str) -> str:
    """``NAME=PATH,PATH2`` -> one source as is, several as the JSON list validate_raw takes."""
    specs = []
    for part in split_list(value):
        named = split_name(part)
        specs.append(localise(part) if named is None else f"{named[0]}={localise(named[1])}")
    return specs[0] if len(specs) == 1 else json.dumps(specs)


def pipeline_params(args: argparse.Namespace, dag: Dag = ASL_DAG) -> dict[str, Any]:
    """Parameters given on the command line, with user paths made absolute."""
    values: dict[str, Any] = {}
    for param in dag.params:
        value = getattr(args, param.name)
        if value is None and param.name == "raw_source" and os.environ.get(RAW_ENV):
            value = os.environ[RAW_ENV]
        if value is None:
            continue
        if param.name == "raw_source" and value:
            value = source_list(value)
        elif param.name in PATH_PARAMS and value and value != "none":
            value = localise(value)
        values[param.name] = value
    return values


def run_local_executor(args: argparse.Namespace, params: dict[str, Any]) -> int:
    prepare_environment()
    if args.list_runs:
        for state in list_runs():
            print(f"{state['run_id']}  {state.get('status', '?'):<10} {state.get('updated', '')}")
        return 0
    requested = {**ASL_DAG.param_defaults(), **params}
    try:
        run_id, run_params, resuming = choose_run(
            ASL_DAG, requested, run_id=args.run_id, resume=args.resume, new=args.new_run
        )
    except LookupError as exc:
        print(f"asl_pipeline: {exc}", file=sys.stderr)
        return 2
    if resuming and params and {**run_params, **params} != run_params:
        print(
            f"note: run {run_id} keeps its own parameters {json.dumps(run_params)}; "
            "use --new-run to run with different ones"
        )
    executor = LocalExecutor(ASL_DAG, run_params, run_id=run_id, use_cache=not args.no_cache)
    try:
        executor.run(from_step=args.from_step)
    except StepFailed as exc:
        print(f"\n{exc.tail}\n" if exc.tail else "", file=sys.stderr)
        print(
            f"asl_pipeline: step {exc.step} failed (exit code {exc.returncode}): {exc.error}\n"
            f"  logs: {exc.log_dir}\n"
            f"  re-run the same command to resume run {executor.run_id} from {exc.step} "
            "(completed steps are reused)",
            file=sys.stderr,
        )
        return exc.returncode if exc.returncode > 0 else 1
    return 0


def dry_run(params: dict[str, Any], step_queue: str | None, use_cache: bool = True) -> int:
    """Build the real PipelineController offline and print what it holds; start nothing.

    Template tasks need a server, so the base task ids are placeholders here.
    """
    os.environ["ASL_OFFLINE"] = "1"
    prepare_environment()
    controller = clearml_controller.build_controller(
        ASL_DAG,
        params,
        base_task_id=lambda step: f"template:{step.name}",
        step_queue=step_queue,
        use_cache=use_cache,
    )
    print(DRY_RUN_MARKER)
    print(json.dumps(clearml_controller.controller_as_dict(controller), indent=2, default=str))
    controller.task.close()
    return 0


def run_clearml(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """Build the PipelineController from the same DAG and start it."""
    step_queue = args.step_queue or args.queue
    if args.dry_run:
        return dry_run(params, step_queue, use_cache=not args.no_cache)
    templates_project = f"{ASL_DAG.project}/pipeline step templates"
    controller = clearml_controller.build_controller(
        ASL_DAG,
        params,
        base_task_id=lambda step: clearml_controller.ensure_base_task(step, templates_project),
        step_queue=step_queue,
        use_cache=not args.no_cache,
    )
    if args.queue:
        controller.start(queue=args.queue)
        print(f"pipeline controller enqueued on {args.queue!r}; steps on {step_queue!r}")
        return 0
    controller.start_locally(run_pipeline_steps_locally=step_queue is None)
    return 0 if controller.is_successful() else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = pipeline_params(args)
    # Steps run from the repo root (as an agent runs them); pin the workspace before moving there.
    os.environ["ASL_WORKSPACE"] = str(workspace())
    os.chdir(REPO_ROOT)
    use_clearml = args.queue or args.local or args.dry_run
    if not use_clearml and not args.local_executor and server_configured():
        print("a ClearML server is configured: running the controller here (--local)")
        use_clearml = True
    if use_clearml:
        if not (args.dry_run or server_configured()):
            print(
                "asl_pipeline: --queue/--local need a ClearML server (clearml.conf or "
                "CLEARML_API_HOST/CLEARML_API_ACCESS_KEY/CLEARML_API_SECRET_KEY); "
                "use --local-executor to run without one",
                file=sys.stderr,
            )
            return 2
        return run_clearml(args, params)
    return run_local_executor(args, params)


if __name__ == "__main__":
    sys.exit(main())

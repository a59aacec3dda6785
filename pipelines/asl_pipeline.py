"""The ASL pipeline: validate_raw -> publish_dataset -> train -> select_best -> build_triton_repo.

    python pipelines/asl_pipeline.py --config configs/run.yaml [step.option=value ...]

The DAG is defined once in ``asl_recognition/pipeline/dag.py``; a recipe (``--config``) and
``step.option=value`` overrides set the step options (``train.epochs=40``). Modes:

  local-executor  no server (default when none is configured): each step a subprocess with an
                  offline ClearML session, state under <workspace>/pipeline_runs/<run id>;
                  re-running resumes at the failed step.
  queue           ClearML PipelineController, the controller itself on agent queue --queue
                  (steps on --step-queue, default: the same queue).
  local           ClearML PipelineController on this machine against the server; steps run
                  here too unless --step-queue sends them to an agent queue.
  dry-run         print the controller's steps, parents, overrides and cache flags as JSON.

Under an agent (``CLEARML_TASK_ID`` set) the script takes no arguments: the run options and
every pipeline parameter are read back from the controller task, as edited in the web UI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.clearml_env import (
    configured_output_uri,
    prepare_environment,
    server_configured,
    server_unreachable,
)
from asl_recognition.options import (
    HelpFormatter,
    OptionError,
    add_options,
    from_mapping,
    specs,
)
from asl_recognition.paths import REPO_ROOT, workspace
from asl_recognition.pipeline import clearml_controller
from asl_recognition.pipeline.dag import ASL_DAG, Dag
from asl_recognition.pipeline.options import AGENT_RUN_FIELDS, PipelineRunOptions
from asl_recognition.pipeline.recipe import (
    RecipeError,
    edited_recipe,
    load_recipe,
    recipe_record,
)
from asl_recognition.pipeline.runs import mode_conflict, run_options_conflict, with_raw_source
from asl_recognition.stop_signals import install_signal_handlers
from asl_recognition.tracking import connect_options, storage_errors_in_one_line

RUN_SECTION = "Run"
RECIPE_CONFIGURATION = "recipe"
REMOTE_STEP_QUEUE = "default"  # steps of a controller on an agent, when none was named
DRY_RUN_MARKER = "=== PipelineController DAG ==="


class PathError(ValueError):
    """A local path that the machine running the step cannot see."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="step.option=value",
        help="set a step option, e.g. train.epochs=40 (see the option tables), or "
        "raw_version=ID to start from an existing ASL_raw version",
    )
    add_options(parser, PipelineRunOptions)
    return parser


def localise(path: str, remote: bool, written: bool = False) -> str:
    """Paths inside the repo stay relative (an agent's checkout has them too); others absolute.

    A relative path is read from the repository root, where ``make`` and agents run, whatever
    the current folder.

    A step on an agent cannot read a folder of this machine: ``remote`` refuses such a path,
    and a path it reads (not ``written``) inside the repo that the commit lacks as it is here.
    """
    if path in ("", "none"):
        return path
    name, sep, rest = path.partition("=")
    if sep and "/" not in name:
        return f"{name}={localise(rest, remote, written)}"
    if "://" in path:  # passed on as it was, it failed in the step (or was skipped) on the agent
        raise PathError(
            f"{path} is a storage URL, and no step downloads one: download it here and give the "
            "folder, or publish it first (python tasks/validate_raw.py --source PATH) and pass "
            "raw_version=<the new ASL_raw id>"
        )
    resolved = (REPO_ROOT / Path(path).expanduser()).resolve()  # relative: to the repo root
    try:
        rel = resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        if remote:
            raise PathError(
                f"{path} is outside the repository, so an agent cannot read it: publish it "
                f"first (python tasks/validate_raw.py --source {path}) and pass "
                "raw_version=<the new ASL_raw id>, or use a storage URL"
            ) from None
        return str(resolved)
    why = remote and not written and clearml_controller.not_in_commit(rel)
    if why:
        raise PathError(
            f"{path}: an agent clones the commit, and {why}: commit and push it, or publish it "
            f"first (python tasks/validate_raw.py --source {path}) and pass raw_version=<the "
            "new ASL_raw id>"
        )
    return rel


def localise_paths(values: dict[str, Any], dag: Dag, remote: bool) -> dict[str, Any]:
    """Rewrite every path-typed step option of the recipe (see ``option(path=True)``).

    A path that cannot travel to an agent is refused, except for an option the run can do
    without (``remote_fallback``, e.g. train's extra evaluation folder): that one is replaced
    by its fallback with a one-line warning, so the shipped recipe still starts a server run.
    """
    out = dict(values)
    for step in dag.steps:
        for spec in specs(step.options):
            key = f"{step.name}/{spec.name}"
            if spec.path and out.get(key) not in (None, "", []):
                try:
                    out[key] = _localise_value(out[key], remote, spec.written)
                except PathError as exc:
                    if spec.remote_fallback is None:
                        raise
                    print(
                        f"warning: {step.name}.{spec.name}: {exc.args[0].split(':')[0]}; "
                        f"running it with {step.name}.{spec.name}={spec.remote_fallback}",
                        file=sys.stderr,
                    )
                    out[key] = spec.remote_fallback
    return out


def _localise_value(value: Any, remote: bool, written: bool) -> Any:
    if isinstance(value, list):
        return [localise(v, remote, written) for v in value]
    return localise(value, remote, written)


def run_local_executor(run: PipelineRunOptions, values: dict[str, Any]) -> int:
    # Imported here: the enqueue path (CI's workflow installs only the SDK) never needs it.
    from asl_recognition.pipeline.local_executor import (
        LocalExecutor,
        RunFromOtherCode,
        StepFailed,
    )
    from asl_recognition.pipeline.runs import choose_run, list_runs

    prepare_environment()
    install_signal_handlers()
    if run.list_runs:
        for state in list_runs():
            print(f"{state['run_id']}  {state.get('status', '?'):<10} {state.get('updated', '')}")
        return 0
    requested = {**ASL_DAG.param_defaults(), **values}
    try:  # a malformed --run-id, or a run in progress elsewhere (locked): refused in one line
        run_id, run_params, resuming, lock = choose_run(
            ASL_DAG, requested, run_id=run.run_id, resume=run.resume, new=run.new_run
        )
    except LookupError as exc:
        print(f"asl_pipeline: error: {exc}", file=sys.stderr)
        return 2
    if run.from_step and not resuming:  # nothing before it to reuse: it would run them all
        lock.release()
        print(
            f"asl_pipeline: error: --from-step {run.from_step} re-runs a step of a recorded run, "
            "and none was chosen: pass --run-id ID (python pipelines/asl_pipeline.py "
            "--list-runs) or --resume",
            file=sys.stderr,
        )
        return 2
    if resuming and values and {**run_params, **values} != run_params:
        print(f"note: run {run_id} keeps its own parameters; use --new-run to run with new ones")
    try:
        executor = LocalExecutor(
            ASL_DAG, run_params, run_id=run_id, use_cache=run.cache, lock=lock
        )
        executor.run(from_step=run.from_step)
    except RunFromOtherCode as exc:
        lock.release()
        print(f"asl_pipeline: error: {exc}", file=sys.stderr)
        return 2
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


def dry_run(run: PipelineRunOptions, values: dict[str, Any]) -> int:
    """Build the real PipelineController offline and print what it holds; start nothing.

    Template tasks need a server, so the base task ids are placeholders here.
    """
    os.environ["ASL_OFFLINE"] = "1"
    prepare_environment()
    controller = clearml_controller.build_controller(
        ASL_DAG,
        values,
        base_task_id=lambda step: f"template:{step.name}",
        step_queue=run.step_queue,
        use_cache=run.cache,
    )
    print(DRY_RUN_MARKER)
    print(json.dumps(clearml_controller.controller_as_dict(controller), indent=2, default=str))
    controller.task.close()
    return 0


def server_controller(
    run: PipelineRunOptions,
    values: dict[str, Any],
    step_queue: str,
    output_uri: str | None = None,
) -> Any:
    """The PipelineController with step templates on the server (created when missing);
    its steps upload to ``output_uri`` (None: their project's or the SDK's default)."""
    image = run.docker_image or None
    return clearml_controller.build_controller(
        ASL_DAG,
        values,
        base_task_id=clearml_controller.template_resolver(ASL_DAG, image),
        step_queue=step_queue,
        use_cache=run.cache,
        docker_image=image,
        output_uri=output_uri,
    )


def run_clearml(run: PipelineRunOptions, values: dict[str, Any]) -> int:
    """Build the PipelineController from the DAG, record how it runs, and start it."""
    step_queue = run.step_queue or (run.queue if run.mode == "queue" else None)
    try:
        if step_queue:
            clearml_controller.check_code_travels()
        output_uri = configured_output_uri()  # on agents too: they see no variable of this shell
    except (clearml_controller.CodeNotOnRemote, ValueError) as exc:
        print(f"asl_pipeline: error: {exc}", file=sys.stderr)
        return 2
    controller = server_controller(run, values, step_queue, output_uri)
    # The agent re-runs this script with no arguments: it reads these back (remote_controller).
    # A "New Run" from the web UI runs the controller on an agent, so steps that ran here go
    # to the step queue an agent serves, not to the controller's own queue.
    recorded = dataclasses.replace(run, step_queue=step_queue or REMOTE_STEP_QUEUE)
    connect_options(controller.task, recorded, RUN_SECTION, fields=AGENT_RUN_FIELDS)
    controller.task.connect_configuration(recipe_record(values), name=RECIPE_CONFIGURATION)
    if run.mode == "queue":
        print(f"pipeline controller enqueued on {run.queue!r}; steps on {step_queue!r}")
        controller.start(queue=run.queue)  # exits this process once enqueued
        return 0
    controller.start_locally(run_pipeline_steps_locally=step_queue is None)
    return 0 if clearml_controller.pipeline_succeeded(controller) else 1


def remote_controller() -> int:
    """The controller task on an agent: options and parameters come from the task itself."""
    install_signal_handlers()
    from clearml import Task

    task = Task.init(
        project_name=ASL_DAG.project,
        task_name=ASL_DAG.name,
        task_type=Task.TaskTypes.controller,
        auto_connect_arg_parser=False,
        reuse_last_task_id=False,
    )
    try:
        run = connect_options(task, PipelineRunOptions(), RUN_SECTION, fields=AGENT_RUN_FIELDS)
        values = clearml_controller.stored_parameters(ASL_DAG, task.get_parameters())
        recorded = task.get_configuration_object_as_dict(RECIPE_CONFIGURATION)
        edits = edited_recipe(ASL_DAG, recorded)
        values.update(edits)
    except (OptionError, RecipeError) as exc:
        message = f"asl_pipeline: error: {exc}"
        print(message, file=sys.stderr)
        task.get_logger().report_text(message)
        return 2  # the agent marks the task failed
    clearml_controller.store_parameters(task, edits)  # or start() would read the old ones
    step_queue = run.step_queue or REMOTE_STEP_QUEUE
    # The agent passes on no shell variable: the destination chosen at launch is the one the
    # launching PipelineController stored on this task (clearml/automation/controller.py).
    controller = server_controller(run, values, step_queue, task.output_uri)
    print(f"pipeline controller on the agent; steps on {step_queue!r}", flush=True)
    controller.start()  # running remotely: runs the DAG here (waits), no second enqueue
    # the SDK marks the task failed after a failed step, but the process would still exit 0
    return 0 if clearml_controller.pipeline_succeeded(controller) else 1


def choose_mode(run: PipelineRunOptions) -> str:
    if run.mode != "auto":
        return run.mode
    if run.list_runs:  # this machine's runs, whatever server is configured
        return "local-executor"
    if server_configured():
        print("a ClearML server is configured: running the controller here (--mode local)")
        return "local"
    return "local-executor"


def main(argv: list[str] | None = None) -> int:
    if argv is None and clearml_controller.running_as_agent_task():
        return remote_controller()
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = args.__dict__.pop("overrides")
    try:
        run = from_mapping(PipelineRunOptions, vars(args))
        if run.from_step and run.from_step not in ASL_DAG.step_names():
            raise OptionError(f"--from-step: choose one of {', '.join(ASL_DAG.step_names())}")
        conflict = run_options_conflict(run, overrides)
        if conflict:
            raise OptionError(conflict)
        mode = choose_mode(run)
        conflict = mode_conflict(run, mode)
        if conflict:
            raise OptionError(conflict)
        run.mode = mode
        config = run.config and str(REPO_ROOT / Path(run.config).expanduser())
        values = load_recipe(ASL_DAG, config, overrides)
        if mode == "local-executor":  # in a ClearML mode, the machine running the step picks it
            values = with_raw_source(ASL_DAG, values)
        elsewhere = mode == "queue" or (mode == "local" and run.step_queue)
        values = localise_paths(values, ASL_DAG, remote=bool(elsewhere))
    except (OptionError, RecipeError, PathError) as exc:
        parser.error(str(exc))
    # Steps run from the repo root (as an agent runs them); pin the workspace before moving there.
    os.environ["ASL_WORKSPACE"] = str(workspace())
    # Task.init records the script as sys.argv[0] read against the folder it runs in (clearml
    # backend_interface/task/repo/scriptinfo.py, ScriptInfo.get): a relative one would name the
    # SDK's controller.py once moved, and an agent would run that.
    if os.path.exists(sys.argv[0]):
        sys.argv[0] = os.path.abspath(sys.argv[0])
    os.chdir(REPO_ROOT)
    with storage_errors_in_one_line("asl_pipeline"):
        return run_mode(mode, run, values)


def run_mode(mode: str, run: PipelineRunOptions, values: dict[str, Any]) -> int:
    if mode == "dry-run":
        return dry_run(run, values)
    if mode in ("queue", "local"):
        if not server_configured():
            print(
                "asl_pipeline: --mode queue/local need a ClearML server (clearml.conf or "
                "CLEARML_API_HOST/CLEARML_API_ACCESS_KEY/CLEARML_API_SECRET_KEY); "
                "use --mode local-executor to run without one",
                file=sys.stderr,
            )
            return 2
        unreachable = server_unreachable()
        if unreachable:
            print(f"asl_pipeline: error: {unreachable}", file=sys.stderr)
            return 2
        return run_clearml(run, values)
    return run_local_executor(run, values)


if __name__ == "__main__":
    sys.exit(main())

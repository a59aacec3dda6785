"""Turn the one DAG (``dag.ASL_DAG``) into a ClearML ``PipelineController``.

Each step becomes ``add_step(base_task_id=<template>)`` where the template is a draft task created
from the step's script with ``Task.create(script=..., working_directory=".")`` (one per script
content, reused across launches). Step arguments become ``Args/<option>`` overrides, the names the
task scripts ``task.connect`` under, and ``${step.outputs.key}`` becomes
``${step.parameters.Outputs/key}`` (``record_outputs`` stores outputs as ``Outputs/*`` parameters).
Pipeline parameters are ``add_parameter`` entries, editable in the web UI.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from asl_recognition.clearml_env import record_requirements_file
from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.dag import Dag, Step, to_clearml_reference

TEMPLATE_TAG = "asl-pipeline-step-template"
# The Python a step asks its agent for, as Task.init records it for the controller
# (``pythonX.Y``, clearml/backend_interface/task/repo/scriptinfo.py). Task.create records
# ``python`` unless told, and clearml-agent then takes the Python it runs on itself
# (``Worker._get_task_python_version`` and ``install_virtualenv``, clearml_agent/commands/
# worker.py): on a venv-mode agent running on 3.10 beside a python3.11, every step got 3.10,
# for which requirements.txt has no wheels (pandas 3.0.6), while the controller got 3.11.
TEMPLATE_PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"
BaseTaskResolver = Callable[[Step], str]


def active_steps(dag: Dag, params: Mapping[str, Any]) -> list[Step]:
    """The steps that run with these parameters (see ``Step.skip_reason``)."""
    return [s for s in dag.steps if not s.skip_reason(params)]


def step_parameter_overrides(dag: Dag, step: Step, params: Mapping[str, Any]) -> dict[str, Any]:
    """``Args/<option>`` -> value or ClearML reference; skipped parents give their skip outputs."""
    skipped = {s.name: s for s in dag.steps if s not in active_steps(dag, params)}
    overrides: dict[str, Any] = {}
    for option, value in step.args.items():
        for name, skipped_step in skipped.items():
            for key, replacement in skipped_step.skip_outputs.items():
                if isinstance(value, str):
                    value = value.replace("${%s.outputs.%s}" % (name, key), replacement)
        overrides[f"Args/{option}"] = to_clearml_reference(value)
    return overrides


def step_parents(dag: Dag, step: Step, params: Mapping[str, Any]) -> list[str]:
    names = {s.name for s in active_steps(dag, params)}
    return [p for p in step.parents if p in names]


# What a step runs besides its script: a change to any of these must give a new template (and
# so a new commit for the agent and a new cache key), or agents run stale code.
CODE_PATHS = ("asl_recognition", "requirements.txt", "validation", "config")


def code_digest(step: Step, repo_root: Path = REPO_ROOT) -> str:
    """sha256 over the step script, the package, the requirements and the validation suites."""
    digest = hashlib.sha256()
    files = [repo_root / step.script]
    for name in CODE_PATHS:
        path = repo_root / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for path in files:
        if path.suffix == ".pyc" or "__pycache__" in path.parts or not path.is_file():
            continue
        digest.update(path.relative_to(repo_root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def running_as_agent_task() -> bool:
    """True when an agent (or ClearML's local job runner) started this process for a task.

    The SDK reads either name (``clearml/config/defs.py`` ``TASK_ID_ENV_VAR``), and
    clearml-agent sets both (``clearml_agent/definitions.py``).
    """
    from asl_recognition.clearml_env import server_configured

    task_id = os.environ.get("CLEARML_TASK_ID") or os.environ.get("TRAINS_TASK_ID")
    return bool(task_id) and server_configured()


def stored_parameters(dag: Dag, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Pipeline parameter values from the controller task's ``Args/*`` (text from the web UI).

    An ``Args/*`` name that is no pipeline parameter (misspelt in the web UI, or a step's wired
    input) is an ``OptionError``: it would otherwise be dropped in silence.
    """
    from asl_recognition.options import OptionError, convert, specs

    values: dict[str, Any] = {}
    known = {f"Args/{p.name}" for p in dag.params if "/" not in p.name}
    for step in dag.steps:
        for spec in specs(step.options):
            key = f"Args/{step.name}/{spec.name}"
            if spec.name not in step.wired:
                known.add(key)
                if key in parameters:
                    try:  # "--name" alone is ambiguous: four steps have one
                        values[f"{step.name}/{spec.name}"] = convert(spec, parameters[key])
                    except OptionError as exc:
                        raise OptionError(f"{step.name}/{spec.name}: {exc}") from None
    for param in dag.params:
        if "/" not in param.name and f"Args/{param.name}" in parameters:
            values[param.name] = parameters[f"Args/{param.name}"]
    unknown = sorted(
        k[len("Args/") :] for k in parameters if k.startswith("Args/") and k not in known
    )
    if unknown:
        raise OptionError(f"the pipeline has no parameter {', '.join(unknown)}")
    return values


def store_parameters(task: Any, values: Mapping[str, Any]) -> None:
    """Write pipeline parameter values to the controller task's ``Args/*``, as text.

    ``PipelineController.start()`` connects its parameters to the task's ``Args``, and the SDK
    then takes the text stored there over the values the controller was built with
    (``_Arguments.copy_to_dict``, clearml/backend_interface/task/args.py): a value decided on
    the agent (an edited recipe) must be stored there first, or the steps get the old one.
    """
    from asl_recognition.options import value_as_text

    if values:
        task.update_parameters({f"Args/{k}": value_as_text(v) for k, v in values.items()})


def _git(repo_root: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=repo_root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def git_source(repo_root: Path = REPO_ROOT) -> dict[str, str]:
    """Remote URL, branch and commit for ``Task.create`` so an agent clones the same code.

    The URL loses any user and token in it, as ``Task.init`` strips them (the SDK's own
    ``remove_user_pass_from_url``, clearml/backend_interface/task/repo/scriptinfo.py):
    ``Task.create`` stores what it is given, where everyone in the workspace reads it; agents
    clone with their own git credentials.
    """
    from clearml.backend_interface.task.repo.util import remove_user_pass_from_url

    source = {
        "repo": remove_user_pass_from_url(_git(repo_root, "config", "--get", "remote.origin.url")),
        "branch": _git(repo_root, "rev-parse", "--abbrev-ref", "HEAD"),
        "commit": _git(repo_root, "rev-parse", "HEAD"),
    }
    return {k: v for k, v in source.items() if v and v != "HEAD"}


def porcelain_path(status: str) -> str:
    """The path of the first line of ``git status --porcelain`` (``_git`` strips its indent)."""
    return status.splitlines()[0].split(maxsplit=1)[-1]


def not_in_commit(rel: str, repo_root: Path = REPO_ROOT) -> str | None:
    """Why an agent's clone of HEAD lacks ``rel`` as it is here (None: it has it).

    An agent clones the commit and nothing else: a file git does not track (never added, or
    ignored, like the default workspace) or one changed since the commit is not what it reads.
    """
    if not _git(repo_root, "ls-files", "--", rel):
        return "git does not track it (never added, or ignored)"
    changed = _git(
        repo_root, "status", "--porcelain", "--ignored", "--untracked-files=all", "--", rel
    )
    if changed:
        return f"it differs from the commit ({porcelain_path(changed)} ...)"
    return None


class CodeNotOnRemote(RuntimeError):
    """The code an agent would clone is not the code here: uncommitted or unpushed."""


def check_code_travels(repo_root: Path = REPO_ROOT) -> None:
    """Refuse to send steps to agents unless the tree is clean and HEAD is on a remote branch.

    An agent clones the template's commit and nothing else (``Task.create`` records no diff),
    so an uncommitted edit or an unpushed commit would run as different code than the one
    tagged here.
    """
    dirty = _git(repo_root, "status", "--porcelain", "--", "tasks", "pipelines", *CODE_PATHS)
    if dirty:
        first = porcelain_path(dirty)
        raise CodeNotOnRemote(
            f"uncommitted changes ({first} ...): an agent clones the commit without them; "
            "commit and push first"
        )
    if not _git(repo_root, "config", "--get", "remote.origin.url"):
        raise CodeNotOnRemote("the repository has no remote 'origin' for an agent to clone")
    if not _git(repo_root, "branch", "-r", "--contains", "HEAD"):
        head = _git(repo_root, "rev-parse", "--short=12", "HEAD")
        raise CodeNotOnRemote(f"commit {head} is on no remote branch: push it first")


def template_tags(
    step: Step, source: Mapping[str, str], docker_image: str | None, repo_root: Path = REPO_ROOT
) -> list[str]:
    """What a reusable template must match: the code, the commit it pins, the image."""
    tags = [TEMPLATE_TAG, f"code:{code_digest(step, repo_root)}"]
    if source.get("commit"):
        tags.append(f"commit:{source['commit'][:12]}")
    return tags + ([f"docker:{docker_image}"] if docker_image else [])


def describe_arguments(task: Any, step: Step) -> None:
    """Give the template's ``Args`` the options' help and type, which clones and the UI keep."""
    from asl_recognition.options import specs, value_as_text

    for spec in specs(step.options):
        task.set_parameter(
            f"Args/{spec.name}",
            value_as_text(spec.default),
            description=spec.help,
            value_type=spec.type_name,
        )


def ensure_base_task(
    step: Step,
    project: str,
    task_cls: Any = None,
    repo_root: Path = REPO_ROOT,
    source: Mapping[str, str] | None = None,
    docker_image: str | None = None,
) -> str:
    """The id of a draft template task for ``step``'s current script, created if missing.

    Templates are tagged with the code digest (script, package, requirements), the commit they
    pin and their docker image, so changed code gets a new template with the current commit
    while unchanged code reuses its template (and ClearML step caching keeps working).
    """
    if task_cls is None:
        from clearml import Task as task_cls
    source = git_source(repo_root) if source is None else source
    tags = template_tags(step, source, docker_image, repo_root)
    existing = task_cls.get_tasks(
        project_name=project,
        task_name=f"^{step.name}$",
        # A plain tag list is OR-ed by the server; "__$all" makes it AND (all tags needed).
        tags=["__$all", *tags],
        allow_archived=False,
    )
    if existing:
        return existing[-1].id
    task = task_cls.create(
        project_name=project,
        task_name=step.name,
        task_type=step.task_type,
        script=step.script,
        working_directory=".",
        requirements_file=str(repo_root / "requirements.txt"),
        binary=TEMPLATE_PYTHON,
        docker=docker_image,
        add_task_init_call=False,
        **{k: v for k, v in source.items() if k in ("repo", "branch", "commit")},
    )
    describe_arguments(task, step)
    task.add_tags(tags)
    return task.id


def build_controller(
    dag: Dag,
    params: Mapping[str, Any],
    base_task_id: BaseTaskResolver,
    step_queue: str | None = None,
    version: str | None = None,
    use_cache: bool = True,
    controller_cls: Any = None,
    docker_image: str | None = None,
    output_uri: str | None = None,
) -> Any:
    """A ``PipelineController`` holding the DAG; nothing runs until ``start``/``start_locally``.

    ``base_task_id`` maps a step to its template task id (``ensure_base_task`` with a server).
    ``output_uri`` goes onto every step task: an agent's ``Task.init`` ignores its
    ``output_uri`` argument and keeps the task's own (``clearml/task.py``, the remote branch).
    Parameters are declared as text: the SDK re-types a web-UI edit by its default's type
    (``clearml/automation/controller.py`` ``_start`` -> ``task.connect`` of the typed
    defaults), turning ``a,b`` for a list into its characters and ``yes`` for a bool into
    False; the steps' options classes type the text instead.
    """
    from asl_recognition.options import value_as_text

    if controller_cls is None:
        from clearml import PipelineController as controller_cls

        record_requirements_file()  # for the controller's own Task.init
    values = {**dag.param_defaults(), **dict(params)}
    controller = controller_cls(
        name=dag.name,
        project=dag.project,
        version=version,
        add_pipeline_tags=True,
        abort_on_failure=True,
        # the steps run in the project itself, where the registry looks for models: by default
        # they were cloned into the controller's <project>/.pipelines/<name>, and models.get_all
        # does not search subprojects, so select_best never saw the models its pipeline trained
        target_project=dag.project,
        docker=docker_image,
        output_uri=output_uri,  # the steps' default too (the SDK's add_step)
    )
    if step_queue:
        controller.set_default_execution_queue(step_queue)
    for param in dag.params:
        controller.add_parameter(
            name=param.name,
            default=value_as_text(values[param.name]),
            description=f"{param.help} ({param_type(param)})",
            param_type="str",
        )
    for step in active_steps(dag, values):
        controller.add_step(
            name=step.name,
            base_task_id=base_task_id(step),
            parents=step_parents(dag, step, values),
            parameter_override=step_parameter_overrides(dag, step, values),
            execution_queue=step_queue,
            cache_executed_step=step.cache and use_cache,
        )
    return controller


def pipeline_succeeded(controller: Any) -> bool:
    """Whether a finished pipeline ran, or reused from the cache, every one of its steps.

    Not ``PipelineController.is_successful``: it also asks that the controller's own task be
    completed, which under an agent it is not until this process exits (``Task.close`` marks
    nothing when running remotely, ``clearml/task.py`` ``__shutdown``; the agent marks the task
    from the exit code), so every pipeline run on an agent exited 1 and was marked failed; and
    it counts a step reused from the cache (node status ``cached``) as failed. A cached step's
    job holds the completed task it reused (``clearml/automation/job.py``, ``is_completed``).
    """
    if str(controller.task.get_status()) in ("failed", "stopped"):  # the SDK marked it so
        return False
    nodes = controller.get_pipeline_dag().values()
    return all(node.job is not None and node.job.is_completed() for node in nodes)


def param_type(param: Any) -> str:
    """The type a pipeline parameter's text is read as, shown beside its help."""
    return f"list[{param.type.__name__}]" if param.is_list else param.type.__name__


def template_resolver(dag: Dag, docker_image: str | None = None) -> BaseTaskResolver:
    """Step -> template task id in the project's templates folder, created when missing."""
    project = f"{dag.project}/pipeline step templates"
    return lambda step: ensure_base_task(step, project, docker_image=docker_image)


def controller_as_dict(controller: Any) -> dict[str, Any]:
    """The controller's own view of its DAG (``get_pipeline_dag``), for printing and tests."""
    nodes = {}
    for name, node in controller.get_pipeline_dag().items():
        nodes[name] = {
            "base_task_id": node.base_task_id,
            "parents": list(node.parents),
            "parameters": dict(node.parameters),
            "queue": node.queue,
            "cache_executed_step": node.cache_executed_step,
        }
    return {"parameters": controller.get_parameters(), "nodes": nodes}

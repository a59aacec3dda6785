"""The new-data trigger service: one ``TriggerScheduler`` that launches the pipeline per version.

What it does, exactly (each point read in clearml 2.1.12 or clearml-server, file named):

- **Launch.** For each new finalized or published version of the dataset named exactly
  ``--dataset-name`` (``trigger_name`` is sent as a regex, escaped and anchored here:
  ``DatasetTrigger.build_query``, ``clearml/automation/trigger.py``), it runs
  ``pipelines/asl_pipeline.py --mode queue ... raw_version=<id>`` in the loop, not in the SDK's
  thread, without the task variables an agent set for the service (``clearml_env.SDK_TASK_ENV``).
- **Published versions.** A dataset trigger's query asks for one status: ``completed``, or
  ``published`` with ``trigger_on_publish``, so there is a trigger per status; a version the
  first launched is not launched again when published, except once after a reset between the
  two (the SDK's record of launched versions, the ``state`` artifact, is gone then).
- **Failure.** A failed launch is one line in the log, kept off the "Triggers Executed" table
  and retried at each later poll, up to ``--max-tries`` tries per version (in this process).
- **One instance.** A second start refuses while a task of the same name in project ``ASL`` is
  queued or running; ``--replace`` stops that one (the two may overlap for one poll). A start
  carries over each trigger's newest mark among the service's recent instances in any status,
  so a plain start after the service died (failed, stopped, reset) launches what came meanwhile.
- **State.** The SDK keeps the triggers in the configuration object ``datasets`` and their
  state (last poll time, versions seen) in the output artifact ``state``, which a reset deletes
  (clearml-server ``reset_task``). The newest change time each trigger has seen is also a user
  property (:data:`MARK_PROPERTIES`; editable in any status, ``HyperParams.edit_params``), which
  a reset keeps: after a reset (or ``--replace``) each trigger launches the versions that came
  while it was down, and none it saw before unless changed since (a tag edit moves a version's
  change time). A version still failing when the service stops is not retried: launch it by
  hand with ``asl_pipeline.py --mode queue raw_version=<id>``.
- **Code.** The launched pipelines are built from this service's checkout: on an agent, the
  commit the service task was started from (``--run-here``: this working tree). They do not
  follow the branch; to run newer code, restart the service with ``--replace`` from an
  up-to-date checkout. The commit is logged at start.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from clearml.automation.trigger import BaseTrigger, ExecutedTrigger, TriggerScheduler
from clearml.backend_interface.util import exact_match_regex

from asl_recognition.clearml_env import child_env, record_requirements_file
from asl_recognition.options import OptionError
from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.clearml_controller import (
    CodeNotOnRemote,
    check_code_travels,
    git_source,
)
from asl_recognition.pipeline.options import PIPELINE_RUN_TAG, TriggerOptions
from asl_recognition.tracking import connect_options

PROJECT = "ASL"
TASK_NAME = "ASL new raw data -> pipeline"
PIPELINE_SCRIPT = REPO_ROOT / "pipelines" / "asl_pipeline.py"
LAUNCH_TIMEOUT_S = 1800  # a controller only builds templates and enqueues itself
ACTIVE_STATUSES = ["queued", "in_progress"]
# Every task status (``TaskStatusEnum``, clearml/backend_api/services/v2_23/tasks.py): an
# instance that died is failed, stopped or completed; a reset one is "created" again.
ANY_STATUS = ["created", "queued", "in_progress", "stopped", "published", "publishing", "closed"]
ANY_STATUS += ["failed", "completed", "unknown"]
RECENT_INSTANCES = 10  # each one is a task load (``Task.get_tasks``, clearml/task.py)
# Each trigger's own mark: one mark for both (the newest) skipped, after a reset, a version
# published while the ``published`` query failed and the ``completed`` one moved on.
MARK_PROPERTIES = {False: "trigger_last_change_finalized", True: "trigger_last_change_published"}
WATERMARK_PROPERTY = "trigger_last_change"  # the newest of both: all that older starts stored


class LaunchFailed(RuntimeError):
    """The pipeline process for a new version did not start or did not finish cleanly."""


class AlreadyRunning(RuntimeError):
    """Another instance of the service is queued or running."""


def pipeline_command(dataset_id: str, options: TriggerOptions) -> list[str]:
    """The queue-mode pipeline run for one new version (validate_raw is skipped)."""
    command = [sys.executable, str(PIPELINE_SCRIPT), "--mode", "queue"]
    command += ["--queue", options.pipeline_queue, "--step-queue", options.step_queue]
    if options.config:
        command += ["--config", options.config]
    command += ["--docker-image", options.docker_image]
    return command + [f"raw_version={dataset_id}"]


def make_launcher(
    options: TriggerOptions, runner: Callable[..., Any] = subprocess.run
) -> Callable[[str], None]:
    """The function the scheduler calls with the new version's id; raises :class:`LaunchFailed`."""

    def launch_pipeline(dataset_id: str) -> None:
        command = pipeline_command(dataset_id, options)
        print(f"new {dataset_id}: {' '.join(command)}", flush=True)
        try:
            runner(command, cwd=REPO_ROOT, env=child_env(), check=True, timeout=LAUNCH_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            raise LaunchFailed(
                f"{PIPELINE_SCRIPT.name} exited with status {exc.returncode}"
            ) from None
        except subprocess.TimeoutExpired:
            raise LaunchFailed(f"{PIPELINE_SCRIPT.name} ran past {LAUNCH_TIMEOUT_S} s") from None
        except OSError as exc:
            raise LaunchFailed(f"cannot start {command[0]}: {exc.strerror or exc}") from None

    return launch_pipeline


def _utc(value: Any) -> datetime | None:
    """A time from the server or a property as aware UTC (the server's times are UTC)."""
    try:
        value = datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:  # a property edited by hand: watch from now, as the SDK does
        return None
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value if isinstance(value, datetime) else None


class PipelineTriggerScheduler(TriggerScheduler):
    """``TriggerScheduler`` whose function launches run in the loop, retried when they fail.

    The SDK starts a function in a thread, marks the version as seen before it runs and lists
    it as executed whatever happens (``TriggerScheduler._step``/``_launch_job``), so a failed
    launch was a traceback in a thread, never retried, shown as run.
    """

    def __init__(self, *args: Any, max_tries: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_tries = max_tries
        self._retries: dict[str, tuple[BaseTrigger, int]] = {}
        self._saved_marks: dict[str, datetime] = {}

    def _step(self) -> bool:
        due = dict(self._retries)  # failed at an earlier poll; a new failure waits for the next
        executed = super()._step()
        for dataset_id, (job, tries) in due.items():
            executed |= self._try_launch(job, dataset_id, tries + 1)
        self._save_watermark()
        return executed

    def _launch_job(self, job: BaseTrigger, trigger_id: str) -> None:
        if job.base_task_id or not job.base_function:
            super()._launch_job(job, trigger_id)
        elif not self._seen_by_another(job, trigger_id):
            self._try_launch(job, trigger_id, 1)

    def _seen_by_another(self, job: BaseTrigger, dataset_id: str) -> bool:
        """Whether the other trigger already took this version: finalized, then published."""
        return any(
            dataset_id in (other._triggered_instances or {})
            for other in self._dataset_triggers
            if other is not job
        )

    def _try_launch(self, job: BaseTrigger, dataset_id: str, attempt: int) -> bool:
        started = datetime.now(timezone.utc)
        self._retries.pop(dataset_id, None)
        try:
            job.base_function(dataset_id)
        except Exception as exc:  # any failure is one line in the log, never a traceback
            self._launch_failed(job, dataset_id, attempt, exc)
            return False
        self._executed_triggers.append(
            ExecutedTrigger(
                name=f"{job.name}: {dataset_id}",
                started=started,
                finished=datetime.now(timezone.utc),
                trigger=type(job).__name__,
            )
        )
        return True

    def _launch_failed(
        self, job: BaseTrigger, dataset_id: str, attempt: int, exc: Exception
    ) -> None:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        retry = attempt < self.max_tries
        if retry:
            self._retries[dataset_id] = (job, attempt)
        self._log(
            f"launch for {dataset_id} failed (try {attempt}/{self.max_tries}): {reason}; "
            + ("retrying at the next poll" if retry else "giving up"),
            level=logging.WARNING if retry else logging.ERROR,
        )

    def watermark(self) -> datetime | None:
        """The newest change time of the versions the dataset triggers have seen."""
        return max(self.marks().values(), default=None)

    def marks(self) -> dict[str, datetime]:
        """Each dataset trigger's newest change time seen, by its property name."""
        marks = {_mark_name(t): _utc(t.last_update) for t in self._dataset_triggers}
        return {name: mark for name, mark in marks.items() if mark}

    def _save_watermark(self) -> None:
        marks = self.marks()
        if self._task is not None and marks and marks != self._saved_marks:
            newest = {WATERMARK_PROPERTY: max(marks.values())}
            self._task.set_user_properties(*_properties({**marks, **newest}))
            self._saved_marks = marks

    def _deserialize_state(self) -> None:
        """The SDK's ``state`` artifact (gone after a reset), then the user-property marks."""
        super()._deserialize_state()
        self.restore_watermark(self._task.get_user_properties(value_only=True))

    def _deserialize(self) -> None:
        """The SDK's periodic re-read of the configuration object, which must not rewind: each
        trigger gets back its own mark, not the newest of both (the published trigger moved to
        the finalized one's mark had skipped a version published while its query failed)."""
        marks = {t.name: _utc(t.last_update) for t in self._dataset_triggers}
        super()._deserialize()
        for trigger in self._dataset_triggers:
            _advance(trigger, marks.get(trigger.name))

    def restore_watermark(self, stored: Mapping[str, str] | None) -> None:
        """Watch each trigger from its stored mark on, or from the common one of older starts,
        where it knows of nothing later."""
        stored = stored or {}
        for trigger in self._dataset_triggers:
            own = stored.get(_mark_name(trigger)) or stored.get(WATERMARK_PROPERTY)
            _advance(trigger, _utc(own) if own else None)


def _mark_name(trigger: BaseTrigger) -> str:
    return MARK_PROPERTIES[bool(getattr(trigger, "on_publish", False))]


def _properties(marks: Mapping[str, datetime]) -> list[dict[str, str]]:
    return [{"name": name, "value": mark.isoformat()} for name, mark in marks.items()]


def _advance(trigger: BaseTrigger, mark: datetime | None) -> None:
    """Move ``trigger`` on to ``mark`` unless it has seen later (never back)."""
    seen = _utc(trigger.last_update)
    if mark and (not seen or seen < mark):
        trigger.last_update = mark


def build_scheduler(
    options: TriggerOptions,
    scheduler_cls: Any = PipelineTriggerScheduler,
    runner: Callable[..., Any] = subprocess.run,
) -> Any:
    """The scheduler with its two dataset triggers (in the current task: no force_create_*)."""
    scheduler = scheduler_cls(
        pooling_frequency_minutes=options.poll_minutes,
        sync_frequency_minutes=15,
        max_tries=options.max_tries,
    )
    launch = make_launcher(options, runner)
    for published, kind in ((False, "new"), (True, "published")):
        scheduler.add_dataset_trigger(
            schedule_function=launch,
            trigger_name=exact_match_regex(options.dataset_name),
            trigger_on_publish=published,  # the query asks for one status only
            # a "-tag" excludes: the server skips versions the pipeline made itself
            trigger_on_tags=[f"-{PIPELINE_RUN_TAG}"],
            name=f"{kind} {options.dataset_name} version",
            single_instance=False,
        )
    return scheduler


def take_over(task_cls: Any, replace: bool) -> dict[str, str]:
    """Refuse while another instance is queued or running; with ``replace``, stop it.

    Returns each trigger's newest mark among the earlier instances, for the new one to go on.
    """
    running = task_cls.get_tasks(
        project_name=PROJECT,
        task_name=exact_match_regex(TASK_NAME),
        allow_archived=False,
        task_filter={"status": list(ACTIVE_STATUSES)},
    )
    if running and not replace:
        ids = ", ".join(f"{t.id} ({t.status})" for t in running)
        raise AlreadyRunning(
            f"'{TASK_NAME}' already runs as task {ids}; pass --replace to stop it and start anew"
        )
    for task in running:
        print(f"stopping the running trigger service {task.id} ({task.status})", flush=True)
        task.mark_stopped(force=True, status_message="replaced by a new trigger service")
    return last_watermark(task_cls)


def last_watermark(task_cls: Any) -> dict[str, str]:
    """Each trigger's newest mark among the service's latest instances, whatever their status.

    A start without one watches from now: the SDK's ``TriggerScheduler._step`` queries from
    ``trigger.last_update or datetime.now()`` (clearml/automation/trigger.py), and ``Task.init``
    makes a fresh task with no state. Reading only queued/running instances lost the watermark
    of a service that had died, with every version uploaded while it was down. The latest
    instance need not hold the newest (it may have died before seeing a version, or be an old
    one reset and re-run), so the newest of the recent ones wins. Archived ones count too:
    archiving hides a task, it launches nothing. An instance from before the marks per trigger
    counts with its one mark for both.
    """
    recent = task_cls.get_tasks(
        project_name=PROJECT,
        task_name=exact_match_regex(TASK_NAME),
        allow_archived=True,
        task_filter={
            "status": list(ANY_STATUS),
            "order_by": ["-last_update"],
            "page_size": RECENT_INSTANCES,
        },
    )
    stored = [(task.get_user_properties(value_only=True), task) for task in recent]
    carried = {}
    for name in MARK_PROPERTIES.values():
        seen = [(_utc(props.get(name) or props.get(WATERMARK_PROPERTY)), t) for props, t in stored]
        newest, task = max(
            ((m, t) for m, t in seen if m), key=lambda pair: pair[0], default=(None, None)
        )
        if newest is not None:
            carried[name] = newest.isoformat()
            seen_by = f"seen by task {task.id} ({task.status})"
            print(f"{name}: continuing from {carried[name]}, {seen_by}", flush=True)
    return carried


def checkout_commit() -> str:
    """The commit of this checkout, which every launched pipeline is built from."""
    return git_source().get("commit") or "unknown (not a git checkout)"


def serve(options: TriggerOptions) -> int:
    """Start the service: here (``--run-here``, or on the agent) or on ``--queue``."""
    from clearml import Task

    carried: dict[str, str] = {}
    try:
        # every launch is a queue-mode pipeline, which refuses code an agent cannot clone
        check_code_travels()
        if Task.running_locally():  # on the agent, the queued/running instance is this one
            carried = take_over(Task, options.replace)
    except (CodeNotOnRemote, AlreadyRunning) as exc:
        print(f"trigger_on_new_data: error: {exc}", file=sys.stderr)
        return 2
    # The scheduler runs in this task; connecting the options here is what lets the copy on the
    # services agent read them back (argv is empty there).
    record_requirements_file()
    task = Task.init(project_name=PROJECT, task_name=TASK_NAME, task_type=Task.TaskTypes.service)
    try:  # on the agent: the values as the web UI left them, typed (or refused) here
        options = connect_options(task, options)
    except OptionError as exc:
        message = f"trigger_on_new_data: error: {exc}"
        print(message, file=sys.stderr)
        task.get_logger().report_text(message, print_console=False)
        return 2  # the agent marks the task failed
    if carried:
        task.set_user_properties(*_properties({n: _utc(m) for n, m in carried.items()}))
    print(f"launched pipelines are built from commit {checkout_commit()}", flush=True)
    scheduler = build_scheduler(options)
    scheduler.restore_watermark(carried)
    if options.run_here or not Task.running_locally():
        scheduler.start()
    else:
        if options.docker_image:  # the agent's default image cannot install requirements.txt
            task.set_base_docker(docker_image=options.docker_image)
        scheduler.start_remotely(queue=options.queue)
    return 0

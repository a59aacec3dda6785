"""The new-data trigger: registered with the SDK's real signature, turned into the SDK's real
server query, launching a pipeline process that is not bound to the service's own task,
recording a failed launch as failed and retrying it, keeping its watermark across a reset, and
running one instance at a time.

No server can run here: the SDK classes are ``create_autospec`` mocks (a wrong keyword fails)
or the service's real scheduler class with only its server-side constructor replaced
(``OfflineScheduler``, an emulation), so the SDK's own ``TriggerScheduler._step`` runs.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from unittest import mock

import asl_pipeline
import clearml
import pytest
import trigger_on_new_data
from asl_testkit.cli import recipe_steps
from clearml import Task
from clearml.automation.controller import PipelineDecorator
from clearml.automation.job import LocalClearmlJob
from clearml.backend_api import services
from clearml.backend_api.session import Session
from clearml.backend_api.session.client.client import APIClient, make_service_class
from clearml.config import defs

from asl_recognition import clearml_env
from asl_recognition.options import from_mapping, parse
from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline import clearml_controller, trigger
from asl_recognition.pipeline.dag import ASL_DAG
from asl_recognition.pipeline.options import PIPELINE_RUN_TAG, PipelineRunOptions, TriggerOptions
from asl_recognition.pipeline.recipe import load_recipe

# the steps the make-run recipe runs (it trains the landmark model: every step of the DAG)
STEPS = recipe_steps()
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
# what clearml-agent 3.0.3 sets for the task it runs (clearml_agent/definitions.py, worker.py)
AGENT_TASK_ENV = {
    "CLEARML_TASK_ID": "service-task",
    "TRAINS_TASK_ID": "service-task",
    "CLEARML_PROC_MASTER_ID": "4242:service-task",
    "TRAINS_PROC_MASTER_ID": "4242:service-task",
    "CLEARML_LOG_TASK_TO_BACKEND": "1",
    "TRAINS_LOG_TASK_TO_BACKEND": "1",
}


class OfflineScheduler(trigger.PipelineTriggerScheduler):
    """Emulation: the service's scheduler minus the SDK constructor that needs a server."""

    def __init__(
        self,
        pooling_frequency_minutes: float = 3.0,
        sync_frequency_minutes: float = 15,
        max_tries: int = 3,
    ):
        self._dataset_triggers, self._model_triggers, self._task_triggers = [], [], []
        self._executed_triggers = []
        self._task = None  # _log prints
        self.max_tries = max_tries
        self._retries = {}
        self._saved_marks = {}
        self._client = mock_api_client()


def mock_api_client() -> mock.Mock:
    """``APIClient`` with the real ``tasks`` service's methods; an older server (no ``_or_``)."""
    mock_client = mock.create_autospec(APIClient, instance=True)
    mock_client.session = mock.create_autospec(Session, instance=True)
    mock_client.session.feature_set = "basic"
    mock_client.session.check_min_server_version.return_value = False
    mock_client.tasks = mock.create_autospec(make_service_class(services.tasks), instance=True)
    mock_client.tasks.get_all.return_value = []
    return mock_client


def version(dataset_id: str, when: datetime) -> SimpleNamespace:
    """A dataset task as the server answers the trigger's ``only_fields``."""
    return SimpleNamespace(id=dataset_id, name="ASL_raw", last_update=when, last_change=when)


def failing_runner(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs a real process that fails as a refused pipeline launch does (exit status 3)."""
    return subprocess.run([sys.executable, "-c", "raise SystemExit(3)"], **kwargs)


def offline(options: TriggerOptions, runner) -> OfflineScheduler:
    return trigger.build_scheduler(options, OfflineScheduler, runner)


def test_trigger_registered_with_the_real_signature_and_no_project_filter():
    mock_scheduler_cls = mock.create_autospec(trigger.PipelineTriggerScheduler)
    options = parse(TriggerOptions, ["--poll-minutes", "0.5", "--max-tries", "5"])
    scheduler = trigger.build_scheduler(options, mock_scheduler_cls, runner=mock.Mock())
    assert scheduler is mock_scheduler_cls.return_value
    assert mock_scheduler_cls.call_args.kwargs["pooling_frequency_minutes"] == 0.5
    assert mock_scheduler_cls.call_args.kwargs["max_tries"] == 5
    finalized, published = scheduler.add_dataset_trigger.call_args_list
    for call in (finalized, published):
        assert "trigger_project" not in call.kwargs  # resolved once by the SDK: misses new ones
        assert call.kwargs["trigger_name"] == "^ASL_raw$"
        assert call.kwargs["trigger_on_tags"] == [f"-{PIPELINE_RUN_TAG}"]
        assert callable(call.kwargs["schedule_function"])
    assert [c.kwargs["trigger_on_publish"] for c in (finalized, published)] == [False, True]


def test_sdk_query_watches_every_asl_raw_version_except_the_pipelines_own():
    scheduler = offline(TriggerOptions(), runner=mock.Mock())
    statuses = []
    for trigger_ in scheduler._dataset_triggers:
        query = trigger_.build_query(datetime.now(timezone.utc), client=None)
        assert query["project"] is None
        assert query["tags"] == ["-asl-pipeline"]  # the server's "exclude this tag" form
        assert query["system_tags"] == ["dataset"]
        statuses += query["status"]
    assert statuses == ["completed", "published"]  # one status per query (build_query)


def versions_by_status(**by_status: list[SimpleNamespace]) -> Callable[..., list]:
    """Emulation of the server's ``tasks.get_all``: the versions in the status the query asks."""
    return lambda **query: [v for s in query["status"] for v in by_status.get(s, [])]


def test_a_version_published_before_the_next_poll_is_launched(capsys):
    """Finalized and published between two polls: a ``completed``-only query never saw it."""
    runner = mock.Mock()
    scheduler = offline(TriggerOptions(), runner)
    scheduler._client.tasks.get_all.side_effect = versions_by_status(
        published=[version("ds-pub", T0)]
    )
    assert scheduler._step() is True
    (command,), _ = runner.call_args
    assert command[-1] == "raw_version=ds-pub"
    (executed,) = scheduler._executed_triggers
    assert executed.name == "published ASL_raw version: ds-pub"


def test_a_version_launched_when_finalized_is_not_launched_again_when_published(capsys):
    runner = mock.Mock()
    scheduler = offline(TriggerOptions(), runner)
    seen = version("ds-5", T0)
    scheduler._client.tasks.get_all.side_effect = versions_by_status(completed=[seen])
    scheduler._step()
    published = version("ds-5", T0 + timedelta(minutes=5))  # publishing moves last_update
    scheduler._client.tasks.get_all.side_effect = versions_by_status(published=[published])
    scheduler._step()
    scheduler._step()
    assert runner.call_count == 1
    assert [e.name for e in scheduler._executed_triggers] == ["new ASL_raw version: ds-5"]
    assert scheduler.watermark() == T0 + timedelta(minutes=5)


@pytest.mark.parametrize(
    "name, fires",
    [("ASL_raw", True), ("ASL_raw_old", False), ("my_ASL_raw", False), ("ASLxraw", False)],
)
def test_trigger_name_matches_the_dataset_name_only(name, fires):
    """The SDK sends ``match_name`` as the server's ``name`` regex (``BaseTrigger.build_query``,
    clearml/automation/trigger.py): a bare ``ASL_raw`` also matched ``my_ASL_raw_old``."""
    scheduler = offline(TriggerOptions(), runner=mock.Mock())
    for trigger_ in scheduler._dataset_triggers:
        pattern = trigger_.build_query(T0, client=None)["name"]
        assert bool(re.search(pattern, name)) is fires


def test_launcher_starts_a_queue_pipeline_for_the_new_version_with_a_clean_env(monkeypatch):
    for name, value in AGENT_TASK_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CLEARML_API_HOST", "http://127.0.0.1:8008")
    mock_runner = mock.Mock()
    options = parse(TriggerOptions, ["--step-queue", "cpu", "--pipeline-queue", "ctl"])
    scheduler = offline(options, mock_runner)
    trigger_ = scheduler._dataset_triggers[0]
    trigger_.base_function("dataset-42")  # what the SDK calls with the new version's id

    (command,), kwargs = mock_runner.call_args
    assert command[:2] == [sys.executable, str(REPO_ROOT / "pipelines" / "asl_pipeline.py")]
    assert kwargs["cwd"] == REPO_ROOT and kwargs["check"] is True and kwargs["timeout"] > 0
    assert not set(AGENT_TASK_ENV) & set(kwargs["env"])  # else the child attaches to our task
    assert kwargs["env"]["CLEARML_API_HOST"] == "http://127.0.0.1:8008"  # server stays set

    # The launched command is a valid pipeline invocation that skips validate_raw.
    args = vars(asl_pipeline.build_parser().parse_args(command[2:]))
    overrides = args.pop("overrides")
    run = from_mapping(PipelineRunOptions, args)
    assert (run.mode, run.queue, run.step_queue) == ("queue", "ctl", "cpu")
    assert run.docker_image == options.docker_image == "python:3.11-slim-bookworm"
    values = load_recipe(ASL_DAG, REPO_ROOT / run.config, overrides)
    assert values["raw_version"] == "dataset-42"
    assert [s.name for s in clearml_controller.active_steps(ASL_DAG, values)] == STEPS[1:]


def test_child_env_keeps_everything_but_the_task_binding():
    env = {**AGENT_TASK_ENV, "PATH": "/bin", "A": "b"}
    assert clearml_env.child_env(env) == {"PATH": "/bin", "A": "b"}
    assert env["CLEARML_TASK_ID"] == "service-task"  # the caller's mapping is not changed


def test_dropped_names_are_the_sdk_sanitisers_names():
    """The SDK exposes no list: its sanitisers name the variables in code
    (``PipelineDecorator.pipeline``'s ``sanitized_env``, clearml/automation/controller.py;
    ``LocalClearmlJob.launch``, clearml/automation/job.py) and clearml/config/defs.py reads
    each under both prefixes. A name added there must be added to ``SDK_TASK_ENV``."""
    named = r"\b(?:CLEARML|TRAINS)_[A-Z_]+\b"
    sources = inspect.getsource(PipelineDecorator.pipeline) + inspect.getsource(
        LocalClearmlJob.launch
    )
    in_sanitisers = set(re.findall(named, sources))
    entries = (
        defs.TASK_ID_ENV_VAR,
        defs.PROC_MASTER_ID_ENV_VAR,
        defs.LOG_TO_BACKEND_ENV_VAR,
        defs.DEBUG_SIMULATE_REMOTE_TASK,
    )
    read_by_sdk = {key for entry in entries for key in entry.keys}
    assert in_sanitisers <= read_by_sdk
    assert set(clearml_env.SDK_TASK_ENV) == read_by_sdk
    assert len(clearml_env.SDK_TASK_ENV) == len(set(clearml_env.SDK_TASK_ENV))


def test_child_process_holds_no_task_variable_the_sdk_reads():
    """A real child started with ``child_env`` from an agent's environment: the SDK in it sees
    no task to attach to (``clearml/config/remote.py``, ``clearml/config/defs.py``)."""
    probe = (
        "import json\n"
        "from clearml.config import running_remotely, get_remote_task_id\n"
        "from clearml.config import defs\n"
        "print(json.dumps([running_remotely(), get_remote_task_id(),"
        " defs.PROC_MASTER_ID_ENV_VAR.get(), defs.LOG_TO_BACKEND_ENV_VAR.get(),"
        " defs.DEBUG_SIMULATE_REMOTE_TASK.get()]))\n"
    )
    agent_env = {**clearml_env.child_env(), **AGENT_TASK_ENV, "CLEARML_SIMULATE_REMOTE_TASK": "1"}
    seen = subprocess.run(
        [sys.executable, "-c", probe],
        env=clearml_env.child_env(agent_env),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(seen.stdout.strip().splitlines()[-1]) == [False, None, None, None, None]


def test_failed_launch_is_logged_retried_and_given_up_not_listed_as_executed(capsys):
    """A real failing child (exit status 3), through the SDK's own ``TriggerScheduler._step``."""
    runner = mock.Mock(side_effect=failing_runner)
    scheduler = offline(parse(TriggerOptions, ["--max-tries", "2"]), runner)
    scheduler._client.tasks.get_all.return_value = [version("ds-1", T0)]
    scheduler._step()  # the version appears: try 1 fails
    scheduler._client.tasks.get_all.return_value = []
    scheduler._step()  # the next poll: try 2 fails, given up
    scheduler._step()  # nothing more
    assert runner.call_count == 2
    assert scheduler._executed_triggers == []
    out, err = capsys.readouterr()
    failures = [line for line in out.splitlines() if "failed" in line]
    assert failures == [
        "launch for ds-1 failed (try 1/2): asl_pipeline.py exited with status 3; "
        "retrying at the next poll",
        "launch for ds-1 failed (try 2/2): asl_pipeline.py exited with status 3; giving up",
    ]
    assert "Traceback" not in out + err


def test_launch_that_fails_once_runs_at_the_next_poll_and_is_listed_once(capsys):
    outcomes = iter([failing_runner, mock.Mock()])
    runner = mock.Mock(side_effect=lambda command, **kw: next(outcomes)(command, **kw))
    scheduler = offline(TriggerOptions(), runner)
    scheduler._client.tasks.get_all.return_value = [version("ds-2", T0)]
    assert scheduler._step() is True
    assert scheduler._executed_triggers == []
    scheduler._client.tasks.get_all.return_value = []
    assert scheduler._step() is True  # the retry launched it: the table is redrawn
    (executed,) = scheduler._executed_triggers
    assert executed.name == "new ASL_raw version: ds-2" and executed.finished
    scheduler._step()
    assert runner.call_count == 2
    assert "try 1/3" in capsys.readouterr().out


def test_watermark_is_stored_where_a_reset_keeps_it_and_restored_after_one():
    """A reset keeps user properties but deletes output artifacts (clearml-server
    ``reset_task``), where the SDK keeps the trigger's state (``_serialize_state``)."""
    scheduler = offline(TriggerOptions(), runner=mock.Mock())
    scheduler._task = mock.create_autospec(Task, instance=True)
    scheduler._client.tasks.get_all.return_value = [version("ds-3", T0)]
    scheduler._step()
    names = [*trigger.MARK_PROPERTIES.values(), trigger.WATERMARK_PROPERTY]
    scheduler._task.set_user_properties.assert_called_once_with(
        *({"name": name, "value": T0.isoformat()} for name in names)
    )

    after_reset = offline(TriggerOptions(), runner=mock.Mock())
    after_reset._task = mock.create_autospec(Task, instance=True)
    after_reset._task.artifacts = {}  # the SDK's "state" artifact: gone
    after_reset._task.get_user_properties.return_value = {name: T0.isoformat() for name in names}
    after_reset._deserialize_state()  # what BaseScheduler.start does on the agent
    after_reset._step()
    queries = [c.kwargs for c in after_reset._client.tasks.get_all.call_args_list]
    assert [q["status"] for q in queries] == [["completed"], ["published"]]
    assert {q["last_update"] for q in queries} == {f">{T0.isoformat()}"}  # since the last seen


def test_configuration_reread_does_not_rewind_the_watermark():
    scheduler = offline(TriggerOptions(), runner=mock.Mock())
    scheduler._task = mock.create_autospec(Task, instance=True)
    scheduler.restore_watermark({trigger.WATERMARK_PROPERTY: T0.isoformat()})
    old = [
        dict(t.to_dict(), last_update=(T0 - timedelta(days=9)).isoformat())
        for t in scheduler._dataset_triggers
    ]
    scheduler._task._get_configuration_text.side_effect = lambda name: json.dumps(
        old if name == "datasets" else []
    )
    scheduler._deserialize()
    assert scheduler.watermark() == T0


PUBLISHED = version("ds-pub", T0 + timedelta(minutes=1))
FINALIZED = version("ds-new", T0 + timedelta(minutes=2))


def polled_while_the_published_query_failed(runner: mock.Mock) -> OfflineScheduler:
    """A poll whose ``published`` query failed (the SDK logs it and goes on) while a version was
    finalized; ``PUBLISHED`` had been published just before."""
    scheduler = offline(TriggerOptions(), runner)
    scheduler._task = mock.create_autospec(Task, instance=True)
    scheduler.restore_watermark({trigger.WATERMARK_PROPERTY: T0.isoformat()})

    def hiccup(**query):
        if query["status"] == ["published"]:
            raise ConnectionError("the server did not answer")
        return [FINALIZED]

    scheduler._client.tasks.get_all.side_effect = hiccup
    scheduler._step()
    return scheduler


def server_holding_both(**query) -> list[SimpleNamespace]:
    """The server answering the trigger's query: both versions, by status and change time."""
    since = datetime.fromisoformat(query["last_update"][1:])
    by_status = {"completed": [FINALIZED], "published": [PUBLISHED]}
    return [v for v in by_status[query["status"][0]] if v.last_update > since]


def test_a_configuration_reread_does_not_skip_a_publish_whose_query_failed(capsys):
    """The re-read every 15 min moved the published trigger to the finalized one's mark, past
    a version published before, which was then never launched."""
    runner = mock.Mock()
    scheduler = polled_while_the_published_query_failed(runner)
    configuration = [t.to_dict() for t in scheduler._dataset_triggers]
    scheduler._task._get_configuration_text.side_effect = lambda name: json.dumps(
        configuration if name == "datasets" else [], default=str
    )
    scheduler._deserialize()  # the SDK's sync, between two polls
    scheduler._client.tasks.get_all.side_effect = server_holding_both
    scheduler._step()
    launched = sorted(call.args[0][-1] for call in runner.call_args_list)
    assert launched == ["raw_version=ds-new", "raw_version=ds-pub"]


def both_marks(when: datetime) -> dict[str, str]:
    return {name: when.isoformat() for name in trigger.MARK_PROPERTIES.values()}


def test_a_reset_does_not_skip_a_publish_whose_query_failed(capsys):
    """The same failed query, then a reset (the SDK's ``state`` artifact gone): one stored
    mark, the newest of both, had moved the published trigger past that version."""
    runner = mock.Mock()
    scheduler = polled_while_the_published_query_failed(runner)
    stored = {}
    for call in scheduler._task.set_user_properties.call_args_list:
        stored.update({p["name"]: p["value"] for p in call.args})

    after_reset = offline(TriggerOptions(), runner)
    after_reset._task = mock.create_autospec(Task, instance=True)
    after_reset._task.artifacts = {}  # the SDK's "state" artifact: gone
    after_reset._task.get_user_properties.return_value = stored
    after_reset._deserialize_state()
    after_reset._client.tasks.get_all.side_effect = server_holding_both
    after_reset._step()
    launched = [call.args[0][-1] for call in runner.call_args_list]
    assert launched == ["raw_version=ds-new", "raw_version=ds-pub"]


def test_a_start_takes_each_triggers_newest_mark_and_an_older_starts_one_mark_for_both():
    mock_task_cls = mock.create_autospec(Task)
    finalized, published = trigger.MARK_PROPERTIES[False], trigger.MARK_PROPERTIES[True]
    newer = mock_instance("new-style", "failed", None, updated=T0 + timedelta(days=1))
    newer.get_user_properties.return_value = {
        finalized: (T0 + timedelta(hours=3)).isoformat(),
        published: (T0 - timedelta(hours=3)).isoformat(),
        trigger.WATERMARK_PROPERTY: (T0 + timedelta(hours=3)).isoformat(),
    }
    older = mock_instance("old-style", "stopped", T0, updated=T0)
    mock_task_cls.get_tasks.side_effect = emulated_get_tasks([newer, older])
    assert trigger.take_over(mock_task_cls, replace=False) == {
        finalized: (T0 + timedelta(hours=3)).isoformat(),
        published: T0.isoformat(),
    }


def mock_running(task_id: str, status: str, watermark: datetime | None) -> mock.Mock:
    mock_task = mock.create_autospec(Task, instance=True)
    mock_task.id, mock_task.status = task_id, status
    props = {trigger.WATERMARK_PROPERTY: watermark.isoformat()} if watermark else {}
    mock_task.get_user_properties.return_value = props
    return mock_task


def test_second_instance_is_refused_in_one_line(monkeypatch, capsys):
    mock_task_cls = mock.create_autospec(Task)
    mock_task_cls.running_locally.return_value = True
    mock_task_cls.get_tasks.return_value = [mock_running("svc-1", "in_progress", T0)]
    monkeypatch.setattr(clearml, "Task", mock_task_cls)
    monkeypatch.setattr(trigger_on_new_data, "server_configured", lambda: True)
    monkeypatch.setattr(trigger_on_new_data, "server_unreachable", lambda: None)  # mock SDK
    monkeypatch.setattr(trigger, "check_code_travels", lambda: None)  # this tree may be dirty
    assert trigger_on_new_data.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("trigger_on_new_data: error: ")
    assert "svc-1 (in_progress)" in err and "--replace" in err
    mock_task_cls.init.assert_not_called()
    kwargs = mock_task_cls.get_tasks.call_args.kwargs
    assert kwargs["project_name"] == "ASL"
    assert re.fullmatch(kwargs["task_name"], trigger.TASK_NAME)
    assert not re.search(kwargs["task_name"], trigger.TASK_NAME + " (old)")
    assert kwargs["task_filter"] == {"status": ["queued", "in_progress"]}


def test_service_refuses_code_an_agent_cannot_clone_in_one_line(monkeypatch, capsys):
    """Each launch is a queue-mode pipeline, which refuses such code: every one would fail."""
    mock_task_cls = mock.create_autospec(Task)
    monkeypatch.setattr(clearml, "Task", mock_task_cls)
    monkeypatch.setattr(trigger_on_new_data, "server_configured", lambda: True)
    monkeypatch.setattr(trigger_on_new_data, "server_unreachable", lambda: None)  # mock SDK

    def unpushed() -> None:
        raise clearml_controller.CodeNotOnRemote("commit abc is on no remote branch: push it")

    monkeypatch.setattr(trigger, "check_code_travels", unpushed)
    assert trigger_on_new_data.main(["--replace"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "trigger_on_new_data: error: commit abc is on no remote branch: push it"
    mock_task_cls.get_tasks.assert_not_called()  # nothing is stopped for a start that fails
    mock_task_cls.init.assert_not_called()


def test_replace_stops_the_running_instances_and_carries_their_watermark():
    mock_task_cls = mock.create_autospec(Task)
    old = [mock_running("a", "queued", None), mock_running("b", "in_progress", T0)]
    mock_task_cls.get_tasks.return_value = old
    assert trigger.take_over(mock_task_cls, replace=True) == both_marks(T0)
    for mock_task in old:
        assert mock_task.mark_stopped.call_args.kwargs["force"] is True
    mock_task_cls.get_tasks.return_value = []
    assert trigger.take_over(mock_task_cls, replace=False) == {}


def test_trigger_refuses_without_server(monkeypatch, capsys):
    monkeypatch.setattr(trigger_on_new_data, "server_configured", lambda: False)
    assert trigger_on_new_data.main([]) == 2
    assert "needs a ClearML server" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["--poll-minutes", "0"], ["--poll-minutes", "x"], ["--max-tries", "0"]]
)
def test_trigger_bad_option_is_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        trigger_on_new_data.main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].count("error:") == 1


def mock_instance(
    task_id: str,
    status: str,
    watermark: datetime | None,
    updated: datetime,
    archived: bool = False,
) -> mock.Mock:
    """An earlier instance of the service as the server holds it."""
    mock_task = mock_running(task_id, status, watermark)
    mock_task.data = SimpleNamespace(
        last_update=updated, system_tags=["archived"] if archived else []
    )
    return mock_task


def emulated_get_tasks(instances: list[mock.Mock]) -> Callable[..., list[mock.Mock]]:
    """Emulation of the server behind ``Task.get_tasks``: the status and archived filters, the
    ``-last_update`` order and the page size (``tasks.get_all``)."""

    def get_tasks(
        project_name: str, task_name: str, allow_archived: bool, task_filter: dict
    ) -> list[mock.Mock]:
        found = [
            t
            for t in instances
            if t.status in task_filter["status"]
            and (allow_archived or "archived" not in t.data.system_tags)
        ]
        if task_filter.get("order_by") == ["-last_update"]:
            found.sort(key=lambda t: t.data.last_update, reverse=True)
        return found[: task_filter.get("page_size", 500)]

    return get_tasks


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("status", ["failed", "stopped", "completed", "published", "created"])
def test_restart_after_the_service_died_continues_from_its_watermark(status, replace, capsys):
    """The SDK watches from now without one (``TriggerScheduler._step``): the versions uploaded
    while the service was down (died: failed/stopped/completed; reset: created) never ran."""
    mock_task_cls = mock.create_autospec(Task)
    dead = mock_instance("svc-dead", status, T0, updated=T0)
    mock_task_cls.get_tasks.side_effect = emulated_get_tasks([dead])
    assert trigger.take_over(mock_task_cls, replace=replace) == both_marks(T0)
    dead.mark_stopped.assert_not_called()
    assert f"seen by task svc-dead ({status})" in capsys.readouterr().out


def test_restart_takes_the_newest_watermark_not_the_latest_instances():
    """The latest instance may have died before seeing a version, or be an old one re-run."""
    mock_task_cls = mock.create_autospec(Task)
    instances = [
        mock_instance("died-early", "failed", None, updated=T0 + timedelta(days=3)),
        mock_instance("old-rerun", "stopped", T0 - timedelta(days=9), T0 + timedelta(days=2)),
        mock_instance("archived", "stopped", T0, updated=T0 + timedelta(days=1), archived=True),
        mock_instance("older", "failed", T0 - timedelta(days=1), updated=T0),
    ]
    mock_task_cls.get_tasks.side_effect = emulated_get_tasks(instances)
    assert trigger.take_over(mock_task_cls, replace=False) == both_marks(T0)


def test_earlier_instances_query_is_valid_sorted_and_paged():
    """Through the SDK's real ``Task.get_tasks``: its request class checks each status against
    ``TaskStatusEnum`` and refuses an unknown keyword."""
    sent = []

    def answer(session: object, request: object, *args, **kwargs) -> SimpleNamespace:
        sent.append(request)
        found = SimpleNamespace(projects=[SimpleNamespace(id="p-asl")], tasks=[])
        return SimpleNamespace(response=found)

    with (
        mock.patch.object(Task, "_send", side_effect=answer),
        mock.patch.object(Task, "_get_default_session"),
    ):
        assert trigger.last_watermark(Task) == {}
    query = sent[-1].to_dict()
    assert query["status"] == trigger.ANY_STATUS and "-archived" not in query.get(
        "system_tags", []
    )
    assert query["order_by"] == ["-last_update"] and query["page_size"] == trigger.RECENT_INSTANCES
    assert re.fullmatch(query["name"], trigger.TASK_NAME) and query["project"] == ["p-asl"]


def test_plain_start_after_a_crash_records_the_dead_instances_watermark(monkeypatch):
    mock_task_cls = mock.create_autospec(Task)
    mock_task_cls.running_locally.return_value = True
    mock_task_cls.get_tasks.side_effect = emulated_get_tasks(
        [mock_instance("svc-dead", "failed", T0, updated=T0)]
    )
    mock_task = mock_task_cls.init.return_value
    mock_task.connect.side_effect = lambda mapping, name: mapping
    mock_build = mock.create_autospec(trigger.build_scheduler)
    monkeypatch.setattr(clearml, "Task", mock_task_cls)
    monkeypatch.setattr(trigger_on_new_data, "server_configured", lambda: True)
    monkeypatch.setattr(trigger_on_new_data, "server_unreachable", lambda: None)  # mock SDK
    monkeypatch.setattr(trigger, "check_code_travels", lambda: None)
    monkeypatch.setattr(trigger, "build_scheduler", mock_build)
    assert trigger_on_new_data.main([]) == 0
    mock_task.set_user_properties.assert_called_once_with(
        *({"name": name, "value": T0.isoformat()} for name in trigger.MARK_PROPERTIES.values())
    )
    mock_build.return_value.restore_watermark.assert_called_once_with(both_marks(T0))
    mock_build.return_value.start_remotely.assert_called_once()

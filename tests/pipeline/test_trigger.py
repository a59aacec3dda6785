"""The new-data trigger: registered with the SDK's real signature, turned into the SDK's real
server query, and launching a pipeline process that is not bound to the service's own task.

No server can run here: the scheduler class is either ``create_autospec(TriggerScheduler)``
(a strict mock: a wrong keyword fails) or the real class with only its server-side constructor
replaced (``OfflineTriggerScheduler``, an emulation), so the SDK's own trigger code runs.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from unittest import mock

import asl_pipeline
import pytest
import trigger_on_new_data
from asl_testkit import recipe_steps
from clearml.automation import TriggerScheduler

from asl_recognition.options import from_mapping, parse
from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline import clearml_controller
from asl_recognition.pipeline.dag import ASL_DAG
from asl_recognition.pipeline.options import PIPELINE_RUN_TAG, PipelineRunOptions, TriggerOptions
from asl_recognition.pipeline.recipe import load_recipe

# the steps the make-run recipe runs (it trains the landmark model: every step of the DAG)
STEPS = recipe_steps()


class OfflineTriggerScheduler(TriggerScheduler):
    """Emulation: the real TriggerScheduler minus the constructor that needs a server."""

    def __init__(self, pooling_frequency_minutes: float = 3.0, sync_frequency_minutes: float = 15):
        self._dataset_triggers = []
        self.pooling_frequency_minutes = pooling_frequency_minutes


def test_trigger_registered_with_the_real_signature_and_no_project_filter():
    mock_scheduler_cls = mock.create_autospec(TriggerScheduler)
    options = parse(TriggerOptions, ["--poll-minutes", "0.5"])
    scheduler = trigger_on_new_data.build_scheduler(
        options, mock_scheduler_cls, runner=mock.Mock()
    )
    assert scheduler is mock_scheduler_cls.return_value
    assert mock_scheduler_cls.call_args.kwargs["pooling_frequency_minutes"] == 0.5
    (call,) = scheduler.add_dataset_trigger.call_args_list
    assert "trigger_project" not in call.kwargs  # resolved once by the SDK: misses new projects
    assert call.kwargs["trigger_name"] == "ASL_raw"
    assert call.kwargs["trigger_on_tags"] == [f"-{PIPELINE_RUN_TAG}"]
    assert callable(call.kwargs["schedule_function"])


def test_sdk_query_watches_every_asl_raw_version_except_the_pipelines_own():
    options = TriggerOptions()
    scheduler = trigger_on_new_data.build_scheduler(
        options, OfflineTriggerScheduler, runner=mock.Mock()
    )
    (trigger,) = scheduler._dataset_triggers
    query = trigger.build_query(datetime.now(timezone.utc), client=None)
    assert query["name"] == "ASL_raw"
    assert query["project"] is None
    assert query["tags"] == ["-asl-pipeline"]  # the server's "exclude this tag" form
    assert query["system_tags"] == ["dataset"] and query["status"] == ["completed"]


def test_launcher_starts_a_queue_pipeline_for_the_new_version_with_a_clean_env(monkeypatch):
    monkeypatch.setenv("CLEARML_PROC_MASTER_ID", "4242:service-task")
    monkeypatch.setenv("TRAINS_PROC_MASTER_ID", "4242:service-task")
    monkeypatch.setenv("CLEARML_TASK_ID", "service-task")
    monkeypatch.setenv("CLEARML_API_HOST", "http://127.0.0.1:8008")
    mock_runner = mock.Mock()
    options = parse(TriggerOptions, ["--step-queue", "cpu", "--pipeline-queue", "ctl"])
    scheduler = trigger_on_new_data.build_scheduler(options, OfflineTriggerScheduler, mock_runner)
    (trigger,) = scheduler._dataset_triggers
    trigger.base_function("dataset-42")  # what the SDK calls with the new version's id

    (command,), kwargs = mock_runner.call_args
    assert command[:2] == [sys.executable, str(REPO_ROOT / "pipelines" / "asl_pipeline.py")]
    assert kwargs["cwd"] == REPO_ROOT and kwargs["check"] is True
    env = kwargs["env"]
    for name in ("CLEARML_PROC_MASTER_ID", "TRAINS_PROC_MASTER_ID", "CLEARML_TASK_ID"):
        assert name not in env  # else the child attaches to the service's task
    assert env["CLEARML_API_HOST"] == "http://127.0.0.1:8008"  # the server stays configured

    # The launched command is a valid pipeline invocation that skips validate_raw.
    args = vars(asl_pipeline.build_parser().parse_args(command[2:]))
    overrides = args.pop("overrides")
    run = from_mapping(PipelineRunOptions, args)
    assert (run.mode, run.queue, run.step_queue) == ("queue", "ctl", "cpu")
    values = load_recipe(ASL_DAG, REPO_ROOT / run.config, overrides)
    assert values["raw_version"] == "dataset-42"
    assert [s.name for s in clearml_controller.active_steps(ASL_DAG, values)] == STEPS[1:]


def test_child_env_keeps_everything_but_the_task_binding():
    env = {"CLEARML_PROC_MASTER_ID": "1:x", "CLEARML_TASK_ID": "x", "PATH": "/bin", "A": "b"}
    assert trigger_on_new_data.child_env(env) == {"PATH": "/bin", "A": "b"}
    assert env["CLEARML_TASK_ID"] == "x"  # the caller's mapping is not changed


def test_trigger_refuses_without_server(monkeypatch, capsys):
    monkeypatch.setattr(trigger_on_new_data, "server_configured", lambda: False)
    assert trigger_on_new_data.main([]) == 2
    assert "needs a ClearML server" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--poll-minutes", "0"], ["--poll-minutes", "x"]])
def test_trigger_bad_option_is_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        trigger_on_new_data.main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].count("error:") == 1

"""The ClearML side of the pipeline: the PipelineController built with the real SDK (offline),
and the calls that need a server (Task.create, start, enqueue, TriggerScheduler) against mocked
SDK objects named as mocks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline import clearml_controller
from asl_recognition.pipeline.dag import ASL_DAG

sys.path.insert(0, str(REPO_ROOT / "pipelines"))
import asl_pipeline  # noqa: E402
import trigger_on_new_data  # noqa: E402

STEPS = ["validate_raw", "publish_dataset", "train", "select_best", "build_triton_repo"]


def dry_run(tmp_path: Path, *args: str) -> dict:
    """Build the real PipelineController offline in its own process (one Task.init per process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(tmp_path / "ws"), HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "pipelines/asl_pipeline.py", "--dry-run", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout.split(asl_pipeline.DRY_RUN_MARKER, 1)[1]
    return json.JSONDecoder().raw_decode(text.lstrip())[0]


def test_real_sdk_controller_dag_offline(tmp_path):
    dag = dry_run(tmp_path, "--step-queue", "cpu-workers", "--epochs", "3", "--model", "resnet18")
    nodes = dag["nodes"]
    assert list(nodes) == STEPS
    assert [nodes[s]["parents"] for s in STEPS] == [
        [],
        ["validate_raw"],
        ["publish_dataset"],
        ["train"],
        ["select_best"],
    ]
    assert {n["queue"] for n in nodes.values()} == {"cpu-workers"}
    # Cached where inputs are immutable ids; re-run where a folder or registry state is read.
    assert {s: nodes[s]["cache_executed_step"] for s in STEPS} == {
        "validate_raw": False,
        "publish_dataset": True,
        "train": True,
        "select_best": False,
        "build_triton_repo": False,
    }
    assert nodes["validate_raw"]["parameters"]["Args/source"] == "${pipeline.raw_source}"
    assert nodes["publish_dataset"]["parameters"] == {
        "Args/raw_version": "${validate_raw.parameters.Outputs/raw_dataset_id}",
        "Args/image_size": "${pipeline.image_size}",
        "Args/grouping": "${pipeline.group_by}",
        "Args/holdout_group": "${pipeline.holdout_group}",
        "Args/holdout_source": "${pipeline.holdout_source}",
    }
    # every Args/<name> a step overrides is an option its task script really connects
    for step in ASL_DAG.steps:
        spec = importlib.util.spec_from_file_location(f"_{step.name}", REPO_ROOT / step.script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dests = {a.dest for a in module.build_parser()._actions}
        overridden = {k.split("/", 1)[1] for k in nodes[step.name]["parameters"]}
        assert overridden <= dests, (step.name, overridden - dests)
    assert (
        nodes["train"]["parameters"]["Args/dataset_version"]
        == "${publish_dataset.parameters.Outputs/dataset_id}"
    )
    assert nodes["select_best"]["parameters"]["Args/model_id"] == (
        "${train.parameters.Outputs/model_id}"
    )
    assert nodes["build_triton_repo"]["parameters"]["Args/model_id"] == (
        "${select_best.parameters.Outputs/production_model_id}"
    )
    params = dag["parameters"]
    assert params["epochs"] == 3 and params["model"] == "resnet18"
    assert set(params) == {p.name for p in ASL_DAG.params}

    # An existing raw version: validate_raw drops out and publish_dataset reads the parameter.
    dag = dry_run(tmp_path, "--raw-version", "abc123")
    assert list(dag["nodes"]) == STEPS[1:]
    first = dag["nodes"]["publish_dataset"]
    assert first["parents"] == []
    assert first["parameters"]["Args/raw_version"] == "${pipeline.raw_version}"
    assert dag["parameters"]["raw_version"] == "abc123"


class MockPipelineController:
    """Records what build_controller asks of clearml.PipelineController."""

    instances: list["MockPipelineController"] = []

    def __init__(self, **kwargs):
        self.init_kwargs = kwargs
        self.calls: list[tuple[str, dict]] = []
        MockPipelineController.instances.append(self)

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, {"args": args, **kwargs}))
            return True

        return record


def test_build_controller_exact_sdk_calls():
    controller = clearml_controller.build_controller(
        ASL_DAG,
        {"epochs": 2},
        base_task_id=lambda step: f"id-{step.name}",
        step_queue="gpu",
        controller_cls=MockPipelineController,
    )
    assert controller.init_kwargs["name"] == "asl_pipeline"
    assert controller.init_kwargs["project"] == "ASL"
    names = [c[0] for c in controller.calls]
    assert names[0] == "set_default_execution_queue"
    params = {c[1]["name"]: c[1]["default"] for c in controller.calls if c[0] == "add_parameter"}
    assert params["epochs"] == 2 and params["image_size"] == 64
    steps = [c[1] for c in controller.calls if c[0] == "add_step"]
    assert [s["name"] for s in steps] == STEPS
    assert all(s["execution_queue"] == "gpu" for s in steps)
    assert [s["base_task_id"] for s in steps] == [f"id-{n}" for n in STEPS]
    assert steps[2]["parameter_override"]["Args/epochs"] == "${pipeline.epochs}"
    uncached = clearml_controller.build_controller(
        ASL_DAG,
        {},
        base_task_id=lambda s: "x",
        use_cache=False,
        controller_cls=MockPipelineController,
    )
    assert not any(c[1].get("cache_executed_step") for c in uncached.calls if c[0] == "add_step")


def test_ensure_base_task_creates_template_from_script_once():
    mock_task_cls = SimpleNamespace(created=[], existing=[])

    def get_tasks(**kwargs):
        mock_task_cls.query = kwargs
        return mock_task_cls.existing

    def create(**kwargs):
        mock_task_cls.created.append(kwargs)
        return SimpleNamespace(
            id="new-template", add_tags=lambda tags: setattr(mock_task_cls, "tags", tags)
        )

    mock_task_cls.get_tasks = get_tasks
    mock_task_cls.create = create
    step = ASL_DAG.step("select_best")
    source = {"repo": "https://example.org/asl.git", "branch": "develop", "commit": "abc"}
    assert clearml_controller.ensure_base_task(step, "ASL/t", mock_task_cls, source=source) == (
        "new-template"
    )
    (created,) = mock_task_cls.created
    assert created["script"] == "tasks/select_best.py"
    assert created["working_directory"] == "."
    assert created["task_type"] == "qc"
    assert created["requirements_file"].endswith("requirements.txt")
    assert created["add_task_init_call"] is False
    assert (created["repo"], created["branch"], created["commit"]) == (
        "https://example.org/asl.git",
        "develop",
        "abc",
    )
    digest = clearml_controller.script_digest(step)
    assert mock_task_cls.tags == [clearml_controller.TEMPLATE_TAG, f"script:{digest}"]
    assert mock_task_cls.query["tags"] == mock_task_cls.tags
    # Same script: the existing template is reused, nothing created.
    mock_task_cls.existing = [SimpleNamespace(id="old-template")]
    assert clearml_controller.ensure_base_task(step, "ASL/t", mock_task_cls) == "old-template"
    assert len(mock_task_cls.created) == 1


def _args(*argv: str) -> argparse.Namespace:
    return asl_pipeline.build_parser().parse_args(list(argv))


@pytest.fixture()
def mock_controller(monkeypatch):
    made = {}

    def mock_build_controller(dag, params, base_task_id, step_queue=None, use_cache=True):
        made.update(params=params, step_queue=step_queue, base=base_task_id)
        made["controller"] = MockPipelineController()
        return made["controller"]

    monkeypatch.setattr(clearml_controller, "build_controller", mock_build_controller)
    return made


def test_queue_mode_starts_controller_on_the_queue(mock_controller):
    args = _args("--queue", "services", "--step-queue", "default", "--epochs", "4")
    assert asl_pipeline.run_clearml(args, asl_pipeline.pipeline_params(args)) == 0
    controller = mock_controller["controller"]
    assert controller.calls == [("start", {"args": (), "queue": "services"})]
    assert mock_controller["step_queue"] == "default"
    assert mock_controller["params"] == {"epochs": 4}


def test_local_mode_runs_controller_and_steps_here(mock_controller):
    args = _args("--local")
    asl_pipeline.run_clearml(args, {})
    calls = mock_controller["controller"].calls
    assert calls[0] == ("start_locally", {"args": (), "run_pipeline_steps_locally": True})
    args = _args("--local", "--step-queue", "gpu")
    asl_pipeline.run_clearml(args, {})
    calls = mock_controller["controller"].calls
    assert calls[0] == ("start_locally", {"args": (), "run_pipeline_steps_locally": False})


def test_clearml_modes_refuse_without_server(monkeypatch, capsys):
    monkeypatch.setattr(asl_pipeline, "server_configured", lambda: False)
    assert asl_pipeline.main(["--queue", "services"]) == 2
    assert "need a ClearML server" in capsys.readouterr().err


class MockTriggerScheduler:
    def __init__(self, **kwargs):
        self.init_kwargs = kwargs
        self.triggers = []
        self.started = None

    def add_dataset_trigger(self, **kwargs):
        self.triggers.append(kwargs)

    def start_remotely(self, queue):
        self.started = ("remote", queue)


def test_trigger_watches_raw_dataset_and_launches_pipeline_with_new_version():
    args = trigger_on_new_data.build_parser().parse_args(["--step-queue", "cpu"])
    mock_runs = []
    scheduler = trigger_on_new_data.build_scheduler(
        args, MockTriggerScheduler, runner=lambda cmd, **kw: mock_runs.append((cmd, kw))
    )
    (trigger,) = scheduler.triggers
    assert trigger["trigger_project"] == "ASL/datasets"
    assert trigger["trigger_name"] == "ASL_raw"
    assert trigger["trigger_on_publish"] is False
    assert callable(trigger["schedule_function"])
    trigger["schedule_function"]("dataset-42")
    ((command, kwargs),) = mock_runs
    assert command[1].endswith("pipelines/asl_pipeline.py")
    assert command[2:] == [
        "--queue",
        "services",
        "--step-queue",
        "cpu",
        "--raw-version",
        "dataset-42",
    ]
    assert kwargs["check"] is True
    # The launched command is a valid pipeline invocation that skips validate_raw.
    launched = asl_pipeline.pipeline_params(_args(*command[2:]))
    assert launched == {"raw_version": "dataset-42"}
    assert [s.name for s in clearml_controller.active_steps(ASL_DAG, launched)] == STEPS[1:]


def test_trigger_refuses_without_server(monkeypatch, capsys):
    monkeypatch.setattr(trigger_on_new_data, "server_configured", lambda: False)
    assert trigger_on_new_data.main([]) == 2
    assert "needs a ClearML server" in capsys.readouterr().err


def test_pipeline_workflow_enqueues_with_secrets():
    import yaml

    workflow = yaml.safe_load((REPO_ROOT / ".github/workflows/pipeline.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]
    assert triggers["push"]["branches"] == ["develop", "test"]
    assert workflow["permissions"] == {"contents": "read"}
    steps = workflow["jobs"]["enqueue"]["steps"]
    assert steps[0]["with"]["persist-credentials"] is False
    enqueue = steps[-1]
    assert "--queue services" in enqueue["run"]
    for key in ("CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "CLEARML_API_HOST"):
        assert enqueue["env"][key] == "${{ secrets.%s }}" % key

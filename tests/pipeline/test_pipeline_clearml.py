"""The ClearML side of the pipeline: the PipelineController built with the real SDK (offline),
and the calls that need a server (Task.create, start, enqueue) against strict mocks of the SDK
classes (``create_autospec``), named as mocks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import asl_pipeline
import pytest
import yaml
from asl_testkit.clearml_stub import mock_build_controller
from asl_testkit.cli import run_script
from clearml import PipelineController, Task

from asl_recognition.options import from_mapping, specs
from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline import clearml_controller
from asl_recognition.pipeline.dag import ASL_DAG
from asl_recognition.pipeline.options import PipelineRunOptions
from asl_recognition.pipeline.recipe import as_nested, load_recipe
from asl_recognition.tracking import options_as_text

STEPS = ["validate_raw", "publish_dataset", "train", "select_best", "build_triton_repo"]
RUN_RECIPE = "configs/run.yaml"


def dry_run(tmp_path: Path, *args: str) -> dict:
    """Build the real PipelineController offline in its own process (one Task.init per process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "ASL_"))}
    env.update(ASL_WORKSPACE=str(tmp_path / "ws"), HOME=str(tmp_path))
    result = run_script(
        "pipelines/asl_pipeline.py", "--mode", "dry-run", *args, env=env, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout.split(asl_pipeline.DRY_RUN_MARKER, 1)[1]
    return json.JSONDecoder().raw_decode(text.lstrip())[0]


def test_real_sdk_controller_dag_offline(tmp_path):
    dag = dry_run(
        tmp_path,
        "--config",
        RUN_RECIPE,
        "--step-queue",
        "cpu-workers",
        "train.epochs=3",
        "train.model=resnet18",
    )
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
    # Every option of every step is overridden, under the name its task connects (Args/<option>
    # of the options class the script parses), either wired to a producer or to its parameter.
    for step in (ASL_DAG.step(name) for name in nodes):
        spec = importlib.util.spec_from_file_location(f"_{step.name}", REPO_ROOT / step.script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert getattr(module, step.options.__name__) is step.options, step.script
        overrides = nodes[step.name]["parameters"]
        assert set(overrides) == {f"Args/{s.name}" for s in specs(step.options)}, step.name
        for option in specs(step.options):
            if option.name not in step.wired:
                expected = "${pipeline.%s/%s}" % (step.name, option.name)
                assert overrides[f"Args/{option.name}"] == expected
    assert nodes["publish_dataset"]["parameters"]["Args/raw_version"] == (
        "${validate_raw.parameters.Outputs/raw_dataset_id}"
    )
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
    assert set(params) == {p.name for p in ASL_DAG.params}
    # Declared as text (the SDK would re-type UI edits by a typed default); the options type it.
    assert all(isinstance(v, str) for v in params.values())
    assert params["train/epochs"] == "3" and params["train/model"] == "resnet18"
    recipe = yaml.safe_load((REPO_ROOT / RUN_RECIPE).read_text())
    assert json.loads(params["validate_raw/source"]) == recipe["validate_raw"]["source"]
    assert params["publish_dataset/image_size"] == str(recipe["publish_dataset"]["image_size"])
    assert float(params["train/lr"]) == ASL_DAG.param_defaults()["train/lr"]

    # An existing raw version: validate_raw drops out and publish_dataset reads the parameter.
    dag = dry_run(tmp_path, "raw_version=abc123")
    assert list(dag["nodes"]) == STEPS[1:]
    first = dag["nodes"]["publish_dataset"]
    assert first["parents"] == []
    assert first["parameters"]["Args/raw_version"] == "${pipeline.raw_version}"
    assert dag["parameters"]["raw_version"] == "abc123"


def test_the_controller_names_its_script_when_started_from_another_folder(tmp_path):
    """Task.init reads sys.argv[0] against the folder it runs in; the pipeline moves to the repo
    root first, so a relative script path had named the SDK's own controller.py instead, and
    an agent would have run that."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "ASL_"))}
    env.update(ASL_WORKSPACE=str(tmp_path / "ws"), HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "asl_pipeline.py", "--mode", "dry-run"],
        cwd=REPO_ROOT / "pipelines",
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (session,) = (tmp_path / "ws").glob("clearml_cache/offline/*/task.json")
    script = json.loads(session.read_text())["script"]
    assert (script["entry_point"], script["working_dir"]) == ("pipelines/asl_pipeline.py", ".")
    # its packages are requirements.txt, not the SDK's scan of imports (clearml, pathlib2)
    pinned = (REPO_ROOT / "requirements.txt").read_text()
    assert script["requirements"]["pip"].split("\n\n", 1)[1] == pinned


def test_build_controller_exact_sdk_calls():
    """Against ``create_autospec(PipelineController)``: a wrong keyword fails here."""
    mock_controller_cls = mock.create_autospec(PipelineController)
    controller = clearml_controller.build_controller(
        ASL_DAG,
        {"train/epochs": 2},
        base_task_id=lambda step: f"id-{step.name}",
        step_queue="gpu",
        controller_cls=mock_controller_cls,
    )
    assert controller is mock_controller_cls.return_value
    init = mock_controller_cls.call_args.kwargs
    assert (init["name"], init["project"]) == ("asl_pipeline", "ASL")
    controller.set_default_execution_queue.assert_called_once_with("gpu")
    params = {c.kwargs["name"]: c.kwargs for c in controller.add_parameter.call_args_list}
    assert (
        params["train/epochs"]["default"] == "2" and params["train/epochs"]["param_type"] == "str"
    )
    assert params["publish_dataset/image_size"]["default"] == "64"
    assert params["publish_dataset/split"]["description"].endswith("(list[float])")
    assert json.loads(params["publish_dataset/split"]["default"]) == [0.7, 0.15, 0.15]
    assert init["docker"] is None and init["output_uri"] is None  # the SDK's default
    steps = [c.kwargs for c in controller.add_step.call_args_list]
    assert [s["name"] for s in steps] == STEPS
    assert all(s["execution_queue"] == "gpu" for s in steps)
    assert [s["base_task_id"] for s in steps] == [f"id-{n}" for n in STEPS]
    assert steps[2]["parameter_override"]["Args/epochs"] == "${pipeline.train/epochs}"
    uncached_cls = mock.create_autospec(PipelineController)
    clearml_controller.build_controller(
        ASL_DAG,
        {},
        base_task_id=lambda s: "x",
        use_cache=False,
        controller_cls=uncached_cls,
        output_uri="s3://bucket/asl",
    )
    added = uncached_cls.return_value.add_step.call_args_list
    assert added and not any(c.kwargs["cache_executed_step"] for c in added)
    assert uncached_cls.call_args.kwargs["output_uri"] == "s3://bucket/asl"  # steps' default


def test_ensure_base_task_creates_template_from_script_once():
    mock_task_cls = mock.create_autospec(Task)
    mock_task_cls.get_tasks.return_value = []
    mock_task_cls.create.return_value.id = "new-template"
    step = ASL_DAG.step("select_best")
    source = {"repo": "https://example.org/asl.git", "branch": "develop", "commit": "abc"}
    image = "python:3.11-slim-bookworm"
    made = clearml_controller.ensure_base_task(
        step, "ASL/t", mock_task_cls, source=source, docker_image=image
    )
    assert made == "new-template"
    created = mock_task_cls.create.call_args.kwargs
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
    assert created["docker"] == image  # the agent's default image cannot install the pins
    digest = clearml_controller.code_digest(step)
    # the commit is in the tags: a template is reused only by the commit it pins
    tags = [clearml_controller.TEMPLATE_TAG, f"code:{digest}", "commit:abc", f"docker:{image}"]
    mock_task_cls.create.return_value.add_tags.assert_called_once_with(tags)
    assert mock_task_cls.get_tasks.call_args.kwargs["tags"] == ["__$all", *tags]
    # the UI shows each Args entry with the option's help and type
    described = {
        c.args[0]: c.kwargs for c in mock_task_cls.create.return_value.set_parameter.call_args_list
    }
    assert described["Args/metric_mode"]["description"].startswith("max: a higher metric")
    assert described["Args/holdout_tolerance"]["value_type"] == "float"
    # Same code: the existing template is reused, nothing created.
    mock_task_cls.get_tasks.return_value = [mock.Mock(id="old-template")]
    assert (
        clearml_controller.ensure_base_task(
            step, "ASL/t", mock_task_cls, source=source, docker_image=image
        )
        == "old-template"
    )
    assert mock_task_cls.create.call_count == 1


@pytest.fixture()
def mock_controller(monkeypatch):
    """``build_controller`` replaced: records its arguments, returns a strict mock controller."""
    made = mock_build_controller(monkeypatch)
    monkeypatch.setattr(clearml_controller, "check_code_travels", lambda: None)
    return made


def test_queue_mode_records_run_options_and_starts_controller_on_the_queue(mock_controller):
    run = PipelineRunOptions(mode="queue", queue="services", step_queue="default", cache=False)
    values = load_recipe(ASL_DAG, REPO_ROOT / RUN_RECIPE, ["train.epochs=4"])
    assert asl_pipeline.run_clearml(run, values) == 0
    controller = mock_controller["controller"]
    controller.start.assert_called_once_with(queue="services")
    controller.start_locally.assert_not_called()
    assert mock_controller["step_queue"] == "default"
    assert mock_controller["use_cache"] is False
    assert mock_controller["params"]["train/epochs"] == 4
    assert mock_controller["docker_image"] == "python:3.11-slim-bookworm"
    # what the agent reads back (remote_controller): the run options and the recipe
    # (only what the agent reads: an edit of the others would change nothing)
    recorded_run = {k: options_as_text(run)[k] for k in ("step_queue", "cache", "docker_image")}
    controller.task.connect.assert_called_once_with(recorded_run, name=asl_pipeline.RUN_SECTION)
    recorded = controller.task.connect_configuration.call_args
    assert recorded.kwargs["name"] == asl_pipeline.RECIPE_CONFIGURATION
    assert asl_pipeline.edited_recipe(ASL_DAG, recorded.args[0]) == {}  # as launched: Args hold it
    assert {k: v for k, v in recorded.args[0].items() if not k.startswith("_")} == as_nested(
        values
    )
    # no --step-queue: the steps go to the controller's queue
    asl_pipeline.run_clearml(PipelineRunOptions(mode="queue", queue="q1"), {})
    assert mock_controller["step_queue"] == "q1"


def test_local_mode_runs_controller_and_steps_here(mock_controller):
    asl_pipeline.run_clearml(PipelineRunOptions(mode="local"), {})
    calls = mock_controller["controller"]
    calls.start_locally.assert_called_once_with(run_pipeline_steps_locally=True)
    asl_pipeline.run_clearml(PipelineRunOptions(mode="local", step_queue="gpu"), {})
    calls = mock_controller["controller"]
    calls.start_locally.assert_called_once_with(run_pipeline_steps_locally=False)
    assert mock_controller["step_queue"] == "gpu"


def test_clearml_modes_refuse_without_server(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.chdir(tmp_path)  # main() moves to the repo root: restored after the test
    monkeypatch.setattr(asl_pipeline, "server_configured", lambda: False)
    for mode in ("queue", "local"):
        assert asl_pipeline.main(["--mode", mode]) == 2
        assert "need a ClearML server" in capsys.readouterr().err


def test_remote_paths_are_refused_before_anything_is_enqueued(monkeypatch, capsys, tmp_path):
    """A folder of this machine cannot reach an agent: one line, nothing built."""
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setattr(asl_pipeline, "server_configured", lambda: True)
    with pytest.raises(SystemExit) as exc:
        asl_pipeline.main(["--mode", "queue", f"validate_raw.source={tmp_path}"])
    assert exc.value.code == 2
    assert "is outside the repository, so an agent cannot read it" in capsys.readouterr().err


def test_pipeline_workflow_enqueues_with_secrets():
    import yaml

    workflow = yaml.safe_load((REPO_ROOT / ".github/workflows/pipeline.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]
    assert triggers["push"]["branches"] == ["develop", "test"]
    assert workflow["permissions"] == {"contents": "read"}
    steps = workflow["jobs"]["enqueue"]["steps"]
    assert steps[0]["with"]["persist-credentials"] is False
    enqueue = steps[-1]
    # the command, parsed by the pipeline's own parser, enqueues the controller on services
    command = shlex.split(enqueue["run"])
    assert command[:2] == ["python", "pipelines/asl_pipeline.py"]
    args = vars(asl_pipeline.build_parser().parse_args(command[2:]))
    overrides = args.pop("overrides")
    run = from_mapping(PipelineRunOptions, args)
    assert (run.mode, run.queue) == ("queue", "services"), enqueue["run"]
    load_recipe(ASL_DAG, run.config and REPO_ROOT / run.config, overrides)
    for key in ("CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY", "CLEARML_API_HOST"):
        assert enqueue["env"][key] == "${{ secrets.%s }}" % key


def test_landmark_model_adds_the_landmark_step(tmp_path):
    """publish_landmarks runs only for the landmark model, between publish_dataset and train."""
    nodes = dry_run(tmp_path, "--config", RUN_RECIPE, "train.model=landmarks")["nodes"]
    assert list(nodes) == [*STEPS[:2], "publish_landmarks", *STEPS[2:]]
    assert nodes["publish_landmarks"]["parents"] == ["publish_dataset"]
    assert nodes["train"]["parents"] == ["publish_dataset", "publish_landmarks"]
    assert nodes["train"]["parameters"]["Args/landmarks_version"] == (
        "${publish_landmarks.parameters.Outputs/landmarks_id}"
    )
    assert nodes["publish_landmarks"]["cache_executed_step"] is True


def test_the_shipped_recipe_travels_and_an_outside_folder_is_dropped(
    mock_controller, monkeypatch, capsys, tmp_path
):
    """configs/run.yaml's external check is bundled (data/roboflow_check), so an agent runs it;
    an evaluation folder outside the repo (train.external) cannot travel: it is dropped with one
    warning instead of refusing the whole run."""
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(asl_pipeline, "server_configured", lambda: True)
    monkeypatch.setattr(asl_pipeline, "server_unreachable", lambda: None)  # the mock controller
    assert asl_pipeline.main(["--mode", "queue", "--config", RUN_RECIPE]) == 0
    assert capsys.readouterr().err.strip() == ""
    assert mock_controller["params"]["train/external"] == "data/roboflow_check"
    outside = tmp_path / "phone_photos"
    outside.mkdir()
    argv = ["--mode", "queue", "--config", RUN_RECIPE, f"train.external={outside}"]
    assert asl_pipeline.main(argv) == 0
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert warning.startswith("warning: train.external: ") and "train.external=none" in warning
    assert mock_controller["params"]["train/external"] == "none"
    mock_controller["controller"].start.assert_called_with(queue="services")
    # a required input that cannot travel is still refused (no fallback declared)
    with pytest.raises(SystemExit):
        asl_pipeline.main(["--mode", "queue", f"validate_raw.source={tmp_path}"])


def test_a_run_started_here_records_an_agent_queue_for_its_steps(mock_controller):
    """ "New Run" in the web UI runs the controller on an agent: its steps must go to a step
    queue, not follow the controller to `services`."""
    asl_pipeline.run_clearml(PipelineRunOptions(mode="local"), {})
    recorded = mock_controller["controller"].task.connect.call_args.args[0]
    assert recorded["step_queue"] == asl_pipeline.REMOTE_STEP_QUEUE == "default"
    assert "queue" not in recorded  # the controller's own queue: the agent has no use for it


def test_steps_for_agents_are_refused_from_code_an_agent_cannot_clone(
    mock_controller, monkeypatch, capsys
):
    def mock_unpushed() -> None:
        raise clearml_controller.CodeNotOnRemote("commit abc is on no remote branch: push it")

    monkeypatch.setattr(clearml_controller, "check_code_travels", mock_unpushed)
    assert asl_pipeline.run_clearml(PipelineRunOptions(mode="queue"), {}) == 2
    assert capsys.readouterr().err.strip() == (
        "asl_pipeline: error: commit abc is on no remote branch: push it"
    )
    assert "controller" not in mock_controller  # nothing built, nothing enqueued
    # steps run here (mode local, no step queue): the working tree is what runs
    assert asl_pipeline.run_clearml(PipelineRunOptions(mode="local"), {}) == 0


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def test_check_code_travels_on_real_git_repositories(tmp_path):
    """Dirty tree, no remote, unpushed commit: each refused; a pushed clean HEAD passes."""
    origin, repo = tmp_path / "origin.git", tmp_path / "repo"
    git(tmp_path, "init", "--quiet", "--bare", str(origin))
    git(tmp_path, "init", "--quiet", str(repo))
    (repo / "tasks").mkdir()
    (repo / "tasks" / "train.py").write_text("print(1)\n")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "one")
    check = clearml_controller.check_code_travels
    with pytest.raises(clearml_controller.CodeNotOnRemote, match="no remote 'origin'"):
        check(repo)
    git(repo, "remote", "add", "origin", str(origin))
    with pytest.raises(clearml_controller.CodeNotOnRemote, match="on no remote branch"):
        check(repo)
    git(repo, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    git(repo, "fetch", "--quiet", "origin")
    check(repo)
    (repo / "tasks" / "train.py").write_text("print(2)\n")
    with pytest.raises(clearml_controller.CodeNotOnRemote, match="uncommitted changes"):
        check(repo)


def test_a_recipe_edited_in_the_web_ui_wins_over_the_parameters():
    values = load_recipe(ASL_DAG, REPO_ROOT / RUN_RECIPE, ["train.epochs=4"])
    record = asl_pipeline.recipe_record(values)
    assert asl_pipeline.edited_recipe(ASL_DAG, record) == {}
    record["train"] = {**record["train"], "epochs": 9}
    edited = asl_pipeline.edited_recipe(ASL_DAG, record)
    assert edited["train/epochs"] == 9
    assert list(edited) == ["train/epochs"]  # only the edited entry: the others as launched
    record["train"]["epochs"] = "nine"
    with pytest.raises(asl_pipeline.RecipeError, match="train.epochs"):
        asl_pipeline.edited_recipe(ASL_DAG, record)


def test_a_recipe_recorded_with_one_digest_by_an_older_launch_still_reads():
    values = load_recipe(ASL_DAG, REPO_ROOT / RUN_RECIPE, ["train.epochs=4"])
    nested = {k: v for k, v in asl_pipeline.recipe_record(values).items() if not k.startswith("_")}
    text = json.dumps(nested, sort_keys=True, default=str)
    record = {**nested, "_launched_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
    assert asl_pipeline.edited_recipe(ASL_DAG, record) == {}
    record["train"] = {**record["train"], "epochs": 9}
    assert asl_pipeline.edited_recipe(ASL_DAG, record)["train/epochs"] == 9


def test_web_ui_text_for_pipeline_parameters_is_typed_by_the_options():
    stored = {
        "Args/train/register": "yes",
        "Args/validate_raw/source": "kaggle=data/sample,massey=data/external_sample",
        "Args/train/epochs": "40",
    }
    values = clearml_controller.stored_parameters(ASL_DAG, stored)
    assert values["train/register"] is True
    assert values["validate_raw/source"] == ["kaggle=data/sample", "massey=data/external_sample"]
    assert values["train/epochs"] == 40


def test_a_token_in_the_origin_url_never_reaches_a_step_template(tmp_path):
    """``Task.create`` stores the repository URL as given, readable by the whole workspace;
    the user and token in it are dropped, as ``Task.init`` drops them (the SDK's own code)."""
    repo = tmp_path / "repo"
    git(tmp_path, "init", "--quiet", str(repo))
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "one")
    git(repo, "remote", "add", "origin", "https://ci-bot:glpat-SECRET@gitlab.example.com/a.git")
    mock_task_cls = mock.create_autospec(Task)  # MockTask: Task.create needs a server
    mock_task_cls.get_tasks.return_value = []
    clearml_controller.ensure_base_task(
        ASL_DAG.step("select_best"), "ASL/t", mock_task_cls, repo_root=repo
    )
    created = mock_task_cls.create.call_args.kwargs
    assert created["repo"] == "https://gitlab.example.com/a.git"
    assert "SECRET" not in repr(mock_task_cls.mock_calls)
    # scp-like ssh addresses carry a user name, not a secret: kept as git wrote them
    git(repo, "remote", "set-url", "origin", "git@github.com:org/asl.git")
    assert clearml_controller.git_source(repo)["repo"] == "git@github.com:org/asl.git"


def test_the_launching_shells_output_uri_reaches_the_steps_on_agents(
    mock_controller, monkeypatch, capsys
):
    """An agent's ``Task.init`` ignores its ``output_uri`` argument, and the agent passes on
    none of the launching shell's variables: the destination goes onto the controller, whose
    steps take it (the SDK's add_step default), or a relative one is refused in one line."""
    monkeypatch.setenv("ASL_OUTPUT_URI", "s3://bucket/asl")
    assert asl_pipeline.run_clearml(PipelineRunOptions(mode="queue", queue="services"), {}) == 0
    assert mock_controller["output_uri"] == "s3://bucket/asl"
    monkeypatch.setenv("ASL_OUTPUT_URI", "relative/folder")
    mock_controller.clear()
    assert asl_pipeline.run_clearml(PipelineRunOptions(mode="queue", queue="services"), {}) == 2
    assert "ASL_OUTPUT_URI='relative/folder' must be a URL" in capsys.readouterr().err
    assert "controller" not in mock_controller  # nothing built, nothing enqueued


def test_what_the_commit_an_agent_clones_lacks_is_named(tmp_path):
    """Never added, ignored, or changed since the commit: each named; a committed path passes."""
    repo = tmp_path / "repo"
    git(tmp_path, "init", "--quiet", str(repo))
    (repo / ".gitignore").write_text("workspace/\n")
    (repo / "data" / "A").mkdir(parents=True)
    (repo / "data" / "A" / "a.jpg").write_bytes(b"a")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "one")
    (repo / "workspace" / "raw").mkdir(parents=True)
    (repo / "workspace" / "raw" / "b.jpg").write_bytes(b"b")
    (repo / "new").mkdir()
    (repo / "new" / "c.jpg").write_bytes(b"c")
    not_in_commit = clearml_controller.not_in_commit
    assert not_in_commit("data", repo) is None
    assert not_in_commit("workspace/raw", repo).startswith("git does not track it")
    assert not_in_commit("new", repo).startswith("git does not track it")
    (repo / "data" / "A" / "extra.jpg").write_bytes(b"x")  # beside committed files
    assert not_in_commit("data", repo) == "it differs from the commit (data/A/extra.jpg ...)"
    (repo / "data" / "A" / "extra.jpg").unlink()
    (repo / "data" / "A" / "a.jpg").write_bytes(b"changed")
    assert not_in_commit("data/A", repo) == "it differs from the commit (data/A/a.jpg ...)"


@pytest.mark.parametrize(
    "script, program",
    [
        ("pipelines/asl_pipeline.py", "asl_pipeline"),
        ("pipelines/trigger_on_new_data.py", "trigger"),
    ],
)
def test_an_unreachable_server_is_named_at_once(tmp_path, script, program):
    """The enqueue job (or the trigger service started by hand) with a wrong CLEARML_API_HOST:
    the SDK retried a refused connection for hours and printed nothing, so the job hung
    silently until the runner's time-out."""
    import socket

    with socket.socket() as closed:  # bound, never listening: every connection is refused
        closed.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{closed.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
        env.update(
            CLEARML_API_HOST=host,
            CLEARML_API_ACCESS_KEY="AK",
            CLEARML_API_SECRET_KEY="SK",
            ASL_WORKSPACE=str(tmp_path / "ws"),
            HOME=str(tmp_path),  # no clearml.conf of this machine's
        )
        command = [sys.executable, script]
        if program == "asl_pipeline":
            command += ["--mode", "queue", "--queue", "services", "--config", "configs/run.yaml"]
        proc = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: the ClearML API server {host} does not answer" in proc.stderr
    assert "Traceback" not in proc.stderr

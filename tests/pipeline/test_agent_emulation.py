"""What a ClearML agent does to the project's scripts, emulated offline (no server runs here).

An agent runs ``python -u <script>`` with no arguments from the repository root, lets
``Task.init`` return the task it was given (the SDK's ``running_remotely()`` branch) and hands
the parameters back through ``task.connect`` as the web UI left them: text. It stops a task with
SIGTERM. Each test below drives the project's real code through one of those paths; anything
replaced is named an emulation (the SDK's remote switch) or a mock (the server side).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest import mock

import asl_pipeline
import clearml
import pytest
from asl_testkit.clearml_stub import mock_build_controller
from asl_testkit.cli import RUN_PIPELINE, child_pids, run_script

from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline import clearml_controller
from asl_recognition.pipeline.dag import ASL_DAG

# tasks/predict.py answers one photo for a user at the terminal; it is not a ClearML task (no
# agent runs it), so it is the one script here that may refuse before Task.init.
USER_COMMANDS = {"tasks/predict.py"}
TASK_SCRIPTS = sorted(
    p.relative_to(REPO_ROOT).as_posix()
    for p in REPO_ROOT.glob("tasks/*.py")
    if p.relative_to(REPO_ROOT).as_posix() not in USER_COMMANDS
)
NO_ARG_SCRIPTS = [*TASK_SCRIPTS, "pipelines/asl_pipeline.py"]
DEADLINE_S = 240


def agent_env(tmp_path: Path, name: str) -> dict[str, str]:
    """The environment of an agent-run step, minus the server: offline, own workspace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "ASL_"))}
    env.update(
        CLEARML_OFFLINE_MODE="1",
        ASL_WORKSPACE=str(tmp_path / f"ws-{name}"),
        HOME=str(tmp_path),
        PYTHONUNBUFFERED="1",
    )
    return env


def sessions(workspace: Path) -> list[Path]:
    """Offline session folders ``Task.init`` created under the workspace's ClearML cache."""
    return sorted(
        p for p in (workspace / "clearml_cache" / "offline").glob("offline-*") if p.is_dir()
    )


def session_log(folder: Path) -> str:
    log = folder / "log.jsonl"
    return log.read_text(encoding="utf-8") if log.is_file() else ""


# ---------------------------------------------------------------------------------------------
# 1. python -u <script> with no arguments


def test_every_entry_script_runs_with_no_arguments_and_reaches_task_init(tmp_path):
    """No script may need an argument: each gets past parsing into Task.init.

    The ones that would otherwise do real work are made to fail fast right after Task.init with
    their own one-line reason: ``ASL_RAW`` names an empty folder (validate_raw and the
    pipeline's first step), and the fresh workspace holds no dataset or model (publish_dataset,
    train, build_triton_repo). select_best must refuse its missing --model-id after Task.init,
    so the failure is recorded in the task, not lost in argparse.
    """
    empty = tmp_path / "empty_raw"
    empty.mkdir()
    procs = {}
    for script in NO_ARG_SCRIPTS:
        name = Path(script).stem
        env = agent_env(tmp_path, name)
        env["ASL_RAW"] = str(empty)
        procs[script] = subprocess.Popen(
            [sys.executable, "-u", script],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    deadline = time.monotonic() + DEADLINE_S
    for script, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            pytest.fail(f"{script} ran past {DEADLINE_S} s with no arguments")
        results[script] = (proc.returncode, out, err)

    for script, (returncode, out, err) in results.items():
        name = Path(script).stem
        found = sessions(tmp_path / f"ws-{name}")
        assert "usage:" not in err, f"{script} stopped in argument parsing:\n{err[-2000:]}"
        assert found, f"{script} never reached Task.init:\n{err[-2000:]}"
        assert returncode != 0, f"{script} should have failed fast:\n{out[-2000:]}"
        last = [line for line in err.splitlines() if line.strip()][-1]
        assert "Traceback" not in err, f"{script} crashed instead of one line:\n{err[-3000:]}"
        assert len(last) < 400, last

    # Each task records requirements.txt itself as its packages, the list an agent installs
    # for a clone made in the web UI (the SDK's import scan dropped tritonclient's extras).
    pinned = (REPO_ROOT / "requirements.txt").read_text()
    for script in NO_ARG_SCRIPTS:
        for session in sessions(tmp_path / f"ws-{Path(script).stem}"):
            recorded = json.loads((session / "task.json").read_text())["script"]
            assert recorded["requirements"]["pip"].split("\n\n", 1)[1] == pinned, script

    code, _, err = results["tasks/select_best.py"]
    assert code == 2
    line = "select_best: error: missing required option(s) --model-id"
    assert line in err
    (session,) = sessions(tmp_path / "ws-select_best")
    assert line in session_log(session)  # recorded by the task: it came after Task.init
    code, _, err = results["pipelines/asl_pipeline.py"]
    assert "asl_pipeline: step validate_raw failed" in err


# ---------------------------------------------------------------------------------------------
# 2. the SDK's real remote branch of task.connect

REMOTE_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    from asl_recognition.clearml_env import prepare_environment
    from asl_recognition.tracking import init_task
    from asl_recognition.data.options import PublishDatasetOptions
    from asl_recognition.training.options import TrainOptions
    from asl_recognition.options import as_params, specs

    prepare_environment()
    import clearml.task
    from clearml import Task

    # The task an agent would be given, with parameters as the web UI edits them (text).
    task = Task.init(project_name="ASL", task_name="train cnn", task_type="training",
                     auto_connect_arg_parser=False, auto_resource_monitoring=False)
    edits = json.loads(sys.argv[2])

    def edit(cls, **more):
        # the web UI's edits of this task's own options (set_parameters replaces them all)
        known = {spec.name for spec in specs(cls)}
        mine = {k: v for k, v in edits.items() if k in known}
        task.set_parameters({"Args/" + k: v for k, v in {**mine, **more}.items()})

    def emulate_agent(remote):
        # emulation of an agent run: the SDK's own switch, read by Task.init and task.connect
        clearml.task.running_remotely = lambda: remote

    result = {}
    emulate_agent(True)
    for cls, name in ((TrainOptions, "train cnn"), (PublishDatasetOptions, "publish_dataset")):
        edit(cls)
        ctx = init_task("ASL", name, cls(), task_type="training")
        assert ctx.task is task  # Task.init returned the agent's task
        typed = as_params(ctx.options)
        result[cls.__name__] = {k: [type(v).__name__, v] for k, v in typed.items()}
    emulate_agent(False)  # control: the local branch writes the defaults over the edits
    result["local"] = dict(task.connect({"epochs": "30"}, name="Args"))
    emulate_agent(True)
    edit(TrainOptions, **json.loads(sys.argv[3]))  # the last edit, which the task refuses
    print("RESULT " + json.dumps(result), flush=True)
    init_task("ASL", "train cnn", TrainOptions(), task_type="training")
    print("NOT REACHED", flush=True)
""")

WEB_UI_EDITS = {
    "epochs": "40",
    "batch_size": "32.0",
    "resume": "yes",
    "register": "False",
    "weights": "",
    "lr": "0.0005",
    "augment": "strong",
    "image_size": "64",
    "split": "[0.6, 0.2, 0.2]",
    "holdout_source": "['a', 'b']",
    "raw_version": "abc123",
    "holdout_group": "massey:hand4,massey:hand5",
    "workers": "3",
}


def remote_connect(tmp_path: Path, last_edit: dict[str, str]) -> subprocess.CompletedProcess:
    """REMOTE_SCRIPT with the web UI's edits, ending on ``last_edit``, which the task refuses."""
    script = tmp_path / "remote_connect.py"
    script.write_text(REMOTE_SCRIPT)
    return run_script(
        str(script),
        str(REPO_ROOT),
        json.dumps(WEB_UI_EDITS),
        json.dumps(last_edit),
        env=agent_env(tmp_path, "remote"),
        timeout=DEADLINE_S,
    )


def test_web_ui_edits_come_back_typed_through_the_sdk_remote_branch(tmp_path):
    proc = remote_connect(tmp_path, {"epochs": "forty"})
    assert "RESULT " in proc.stdout, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
    train, publish = result["TrainOptions"], result["PublishDatasetOptions"]
    assert train["epochs"] == ["int", 40]
    assert train["register"] == ["bool", False]
    assert train["weights"] == ["NoneType", None]
    assert train["lr"] == ["float", 0.0005]
    assert train["augment"] == ["str", "strong"]
    assert train["batch_size"] == ["int", 32]  # the SDK alone keeps 64 with a log warning
    assert train["resume"] == ["bool", True]  # the SDK alone reads anything but "true" as False
    assert train["seed"] == ["int", 42]  # not edited: the declared default
    assert publish["split"] == ["list", [0.6, 0.2, 0.2]]
    assert publish["holdout_source"] == ["list", ["a", "b"]]
    # one id as the pipeline passes it (and as typed in the UI): the SDK alone gives list("abc123")
    assert publish["raw_version"] == ["list", ["abc123"]]
    assert publish["holdout_group"] == ["list", ["massey:hand4", "massey:hand5"]]
    assert publish["workers"] == ["int", 3]  # an optional int the SDK alone returns as text
    assert result["local"]["epochs"] == "30"  # without the emulated agent: the defaults win
    # a value that does not fit: one line and exit 2, after Task.init (the task records it)
    assert proc.returncode == 2 and "NOT REACHED" not in proc.stdout
    assert "train cnn: error: --epochs: 'forty' is not a number" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_web_ui_edit_to_no_option_is_refused_through_the_sdk_remote_branch(tmp_path):
    """A misspelt parameter name: the SDK hands back only the keys connected, so the edit would
    be dropped in silence; the task refuses it in one line instead."""
    proc = remote_connect(tmp_path, {"epoch": "3"})
    assert proc.returncode == 2 and "NOT REACHED" not in proc.stdout, proc.stderr[-3000:]
    assert "train cnn: error: the task's Args parameters name no option: epoch (" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# 3. the pipeline controller on an agent


def test_remote_controller_reads_run_options_and_parameters_from_its_task(monkeypatch):
    """``main(None)`` with CLEARML_TASK_ID takes the agent branch and builds the controller
    from what the controller task holds (as edited in the web UI), not from argv."""
    for name in ("CLEARML_OFFLINE_MODE", "ASL_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLEARML_TASK_ID", "controller-task")
    # install_signal_handlers runs in this process: pytest's handlers are put back afterwards
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    stored_run = {"step_queue": "gpu", "cache": "False"}
    stored_params = {
        "Args/train/epochs": "40",
        "Args/train/register": "False",
        "Args/publish_dataset/split": "[0.6, 0.2, 0.2]",
        "Args/raw_version": "raw-id",
        "Run/step_queue": "gpu",
    }
    mock_task = mock.create_autospec(clearml.Task, instance=True)
    mock_task.output_uri = "s3://bucket/asl"  # what the launching controller stored on it
    mock_task.connect.side_effect = lambda mutable, name=None: {**mutable, **stored_run}
    mock_task.get_parameters.return_value = stored_params
    mock_task.get_configuration_object_as_dict.return_value = None  # no recipe recorded
    mock_task_init = mock.Mock(name="mock Task.init", return_value=mock_task)
    monkeypatch.setattr(clearml.Task, "init", mock_task_init)
    built = mock_build_controller(monkeypatch)
    monkeypatch.setattr(clearml_controller, "template_resolver", mock.Mock(name="mock templates"))
    monkeypatch.setattr(sys, "argv", ["asl_pipeline.py", "--mode", "dry-run"])  # must be ignored
    try:
        assert asl_pipeline.main(None) == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)

    assert mock_task_init.call_args.kwargs["task_type"] == clearml.Task.TaskTypes.controller
    (connect,) = mock_task.connect.call_args_list
    assert connect.kwargs["name"] == asl_pipeline.RUN_SECTION
    assert built["params"] == {
        "train/epochs": 40,
        "train/register": False,
        "publish_dataset/split": [0.6, 0.2, 0.2],
        "raw_version": "raw-id",
    }
    assert built["step_queue"] == "gpu" and built["use_cache"] is False
    # the destination chosen at launch, stored on the controller task, goes to the steps
    assert built["output_uri"] == "s3://bucket/asl"
    built["controller"].start.assert_called_once_with()  # runs here: no second enqueue
    built["controller"].task.get_status.assert_called_once_with()
    # the same values give the controller without validate_raw (raw_version is set)
    steps = clearml_controller.active_steps(ASL_DAG, built["params"])
    assert steps[0].name == "publish_dataset"
    # a failed pipeline: the SDK marks the task failed, and the process says so too
    built["succeeds"] = False
    try:
        assert asl_pipeline.main(None) == 1
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_remote_controller_refuses_a_bad_web_ui_value_in_one_line(monkeypatch, capsys):
    """A pipeline parameter edited to a value its option cannot take: one line, exit 2 (the
    agent marks the task failed), nothing built."""
    for name in ("CLEARML_OFFLINE_MODE", "ASL_OFFLINE", "CLEARML_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRAINS_TASK_ID", "controller-task")  # the older name alone is enough
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    mock_task = mock.create_autospec(clearml.Task, instance=True)
    mock_task.connect.side_effect = lambda mutable, name=None: dict(mutable)
    mock_task.get_parameters.return_value = {"Args/train/epochs": "forty"}
    monkeypatch.setattr(clearml.Task, "init", mock.Mock(return_value=mock_task))
    mock_build = mock.Mock(name="mock build_controller")
    monkeypatch.setattr(clearml_controller, "build_controller", mock_build)
    try:
        assert asl_pipeline.main(None) == 2
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("asl_pipeline: error: train/epochs: --epochs: 'forty'") and "\n" not in err
    )
    mock_build.assert_not_called()
    mock_task.get_logger.return_value.report_text.assert_called_once_with(err)


REMOTE_CONTROLLER_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/pipelines")
    from asl_recognition.clearml_env import prepare_environment
    prepare_environment()
    import asl_pipeline
    import clearml.task
    from clearml import PipelineController
    from asl_recognition.pipeline import clearml_controller
    from asl_recognition.pipeline.dag import ASL_DAG
    from asl_recognition.pipeline.options import AGENT_RUN_FIELDS, PipelineRunOptions
    from asl_recognition.pipeline.recipe import load_recipe
    from asl_recognition.tracking import connect_options

    # mocks of what needs a server: step templates, the pipeline's version and hash lookups
    clearml_controller.template_resolver = lambda dag, image=None: lambda step: "tpl-" + step.name
    PipelineController._handle_pipeline_version = lambda self: None
    PipelineController._get_task_hash = lambda self: "mock-hash"
    seen = {}

    def start_stand_in(self, queue=None, **kwargs):
        # start() begins with the SDK's own serialisation (connecting the parameters to Args);
        # what follows (launching step tasks) needs a server
        self._serialize_pipeline_task()
        seen["args"] = dict(self._pipeline_args)
        return True

    PipelineController.start = start_stand_in
    clearml_controller.pipeline_succeeded = lambda controller: True

    # the launch: --mode queue --config configs/run.yaml train.epochs=4, as run_clearml records it
    values = load_recipe(ASL_DAG, "configs/run.yaml", ["train.epochs=4"])
    controller = clearml_controller.build_controller(ASL_DAG, values, base_task_id=lambda s: "t")
    task = controller.task
    run = PipelineRunOptions(mode="queue", step_queue="default")
    connect_options(task, run, asl_pipeline.RUN_SECTION, fields=AGENT_RUN_FIELDS)
    task.connect_configuration(asl_pipeline.recipe_record(values), name="recipe")
    controller.start(queue="services")
    seen.clear()

    # the web UI's edits of the cloned controller
    edits = json.loads(sys.argv[2])
    if "recipe" in edits:
        recipe = task.get_configuration_object_as_dict("recipe")
        for dotted, value in edits.pop("recipe").items():
            step, name = dotted.split(".")
            recipe[step][name] = value
        task.set_configuration_object("recipe", config_dict=recipe)
    for key, text in edits.items():
        task.set_parameter(key, text)

    # the agent: the SDK's remote switch (emulation), then the project's agent branch
    clearml.task.running_remotely = lambda: True
    task.running_locally = lambda: False
    code = asl_pipeline.remote_controller()
    print("RESULT " + json.dumps({"code": code, "args": seen.get("args")}, default=str))
""")


def remote_controller_run(tmp_path: Path, edits: dict) -> tuple[dict, str]:
    script = tmp_path / "remote_controller.py"
    script.write_text(REMOTE_CONTROLLER_SCRIPT)
    proc = run_script(
        str(script), str(REPO_ROOT), json.dumps(edits), env=agent_env(tmp_path, "ctl"),
        timeout=DEADLINE_S,
    )  # fmt: skip
    assert "RESULT " in proc.stdout, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0]), proc.stderr


def test_an_edited_recipe_reaches_the_steps_through_the_sdk_remote_branch(tmp_path):
    """The recipe object edited in the web UI wins (docs/server-path.md): its values must be
    what the SDK's own start() hands the steps, which takes the text stored under Args over the
    values the controller was built with."""
    result, _ = remote_controller_run(
        tmp_path, {"recipe": {"train.epochs": 9}, "Args/train/lr": "0.01", "Run/cache": "false"}
    )
    assert result["code"] == 0
    assert str(result["args"]["train/epochs"]) == "9"  # was 4 at launch
    assert str(result["args"]["train/lr"]) == "0.01"  # an Args edit, beside the recipe's


def test_a_parameter_edited_beside_an_edited_recipe_is_kept(tmp_path):
    """The recipe wins only where it was edited: one digest for the whole recipe had put the
    launched value back over every parameter edited beside it (epochs 40 ran as 4)."""
    result, _ = remote_controller_run(
        tmp_path, {"recipe": {"train.lr": 0.02}, "Args/train/epochs": "40", "Run/cache": "false"}
    )
    assert result["code"] == 0
    assert str(result["args"]["train/epochs"]) == "40"  # the Args edit
    assert str(result["args"]["train/lr"]) == "0.02"  # the recipe's edit


@pytest.mark.parametrize(
    "key, message",
    [
        ("Args/train/patiencee", "the pipeline has no parameter train/patiencee"),
        ("Run/config", "the task's Run parameters name no option: config"),
    ],
)
def test_a_controller_edit_that_would_change_nothing_is_refused(tmp_path, key, message):
    """A misspelt pipeline parameter, or a run option the agent does not read (the recipe file
    was read at launch): one line and exit 2, not a run that ignores the edit."""
    result, err = remote_controller_run(tmp_path, {key: "3"})
    assert result["code"] == 2 and result["args"] is None
    assert f"asl_pipeline: error: {message}" in err and "Traceback" not in err


def test_agent_branch_needs_a_task_id_and_no_forced_offline_mode(monkeypatch):
    for name in ("CLEARML_TASK_ID", "CLEARML_OFFLINE_MODE", "ASL_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert not clearml_controller.running_as_agent_task()
    monkeypatch.setenv("CLEARML_TASK_ID", "t")
    assert clearml_controller.running_as_agent_task()
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    assert not clearml_controller.running_as_agent_task()


# ---------------------------------------------------------------------------------------------
# 4. step templates: queried with AND-ed tags, keyed on all the code a step runs


def copy_code(dest: Path, script: str) -> None:
    """Only what code_digest reads: the step script and CODE_PATHS."""
    for rel in (script, *clearml_controller.CODE_PATHS):
        source = REPO_ROOT / rel
        target = dest / rel
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def test_template_query_is_an_and_of_tags_and_follows_package_changes(tmp_path):
    step = ASL_DAG.step("train")
    copy_code(tmp_path, step.script)
    mock_task_cls = mock.create_autospec(clearml.Task)
    mock_task_cls.get_tasks.return_value = [mock.Mock(id="template-1")]

    def query_tags(repo_root: Path) -> list[str]:
        assert clearml_controller.ensure_base_task(step, "ASL/t", mock_task_cls, repo_root) == (
            "template-1"
        )
        return mock_task_cls.get_tasks.call_args.kwargs["tags"]

    tags = query_tags(tmp_path)
    digest = clearml_controller.code_digest(step, tmp_path)
    assert tags == ["__$all", clearml_controller.TEMPLATE_TAG, f"code:{digest}"]
    assert digest == clearml_controller.code_digest(step)  # the copy holds all it reads
    (tmp_path / "README.md").write_text("not code\n")
    assert clearml_controller.code_digest(step, tmp_path) == digest
    with open(tmp_path / "asl_recognition" / "options.py", "a", encoding="utf-8") as fh:
        fh.write("\n# a change in the package the step imports\n")
    changed = query_tags(tmp_path)
    assert changed[-1] != tags[-1] and changed[:2] == tags[:2]
    (tmp_path / "requirements.txt").write_text("clearml==0.0\n")
    assert query_tags(tmp_path)[-1] not in (tags[-1], changed[-1])


# ---------------------------------------------------------------------------------------------
# 5. SIGTERM, as an agent's abort sends it


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"exited early ({proc.returncode}): {proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"not reached within {timeout} s: {proc.stdout.read()[-3000:]}")
        time.sleep(0.2)


def sigterm_within(proc: subprocess.Popen, seconds: float, what: str) -> None:
    """SIGTERM ``proc``; it must have exited within ``seconds`` (else it is killed, and fails)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{what} ignored SIGTERM for {seconds} s")
    assert time.monotonic() - sent < seconds


def test_sigterm_stops_a_task_after_task_init(tmp_path):
    env = agent_env(tmp_path, "sigterm")
    ws = Path(env["ASL_WORKSPACE"])
    proc = subprocess.Popen(
        [sys.executable, "-u", "tasks/validate_raw.py", "--source", "data/sample"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # validate_raw creates its report folder once Task.init has returned: the task is running
    wait_for(lambda: (ws / "reports" / "ASL_raw").is_dir(), DEADLINE_S, proc)
    sigterm_within(proc, 10, "validate_raw")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stdout.read()[-2000:]


def test_sigterm_stops_the_local_executor_and_its_running_step(tmp_path):
    env = agent_env(tmp_path, "pipeline")
    env.pop("CLEARML_OFFLINE_MODE")  # as `make run` starts it
    ws = Path(env["ASL_WORKSPACE"])
    proc = subprocess.Popen(
        [sys.executable, "-u", *RUN_PIPELINE],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    steps: list[int] = []

    def step_running() -> bool:
        steps[:] = child_pids(proc.pid)
        return bool(steps) and any((s / "task.json").is_file() for s in sessions(ws))

    wait_for(step_running, DEADLINE_S, proc)
    sigterm_within(proc, 15, "the local executor")
    assert proc.returncode != 0
    assert not [pid for pid in steps if alive(pid)], "the step process outlived the executor"
    (state_path,) = (ws / "pipeline_runs").glob("*/state.json")
    state = json.loads(state_path.read_text())
    assert state["status"] == "interrupted"
    assert state["steps"]["validate_raw"]["status"] == "interrupted"
    assert state["steps"]["publish_dataset"]["status"] == "pending"
    assert "re-run the same command to resume" in proc.stdout.read()


AGENT_TRAIN_SCRIPT = textwrap.dedent("""
    import runpy, sys
    repo = sys.argv[1]
    sys.path.insert(0, repo)
    from asl_recognition.clearml_env import prepare_environment
    from asl_recognition.tracking import options_as_text
    from asl_recognition.training.options import TrainOptions

    prepare_environment()
    import clearml.task
    from clearml import Task

    # a web-UI clone of a landmarks training, with one edit the task refuses
    task = Task.init(project_name="ASL", task_name="train landmarks", task_type="training",
                     auto_connect_arg_parser=False, auto_resource_monitoring=False)
    params = {"Args/" + k: v for k, v in options_as_text(TrainOptions(model="landmarks")).items()}
    task.set_parameters({**params, "Args/epochs": "forty"})
    clearml.task.running_remotely = lambda: True  # emulation: the SDK's agent switch
    sys.argv = ["tasks/train.py"]  # as an agent runs it: no arguments
    sys.exit(runpy.run_path(repo + "/tasks/train.py", run_name="agent")["main"](None))
""")


def test_an_agent_run_refusal_names_the_script_not_the_command_lines_model(tmp_path):
    """tasks/train.py promises ``train: error: ...``; an agent passes no arguments, so the task
    name made from them said ``train cnn`` for a landmarks task's refused edit."""
    script = tmp_path / "agent_train.py"
    script.write_text(AGENT_TRAIN_SCRIPT)
    proc = run_script(
        str(script), str(REPO_ROOT), env=agent_env(tmp_path, "train"), timeout=DEADLINE_S
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = [line for line in proc.stderr.splitlines() if "error:" in line][-1]
    assert last == "train: error: --epochs: 'forty' is not a number"


TRIGGER_SCRIPT = textwrap.dedent("""
    import json, sys
    repo = sys.argv[1]
    sys.path.insert(0, repo)
    from asl_recognition.clearml_env import prepare_environment
    from asl_recognition.pipeline.options import TriggerOptions
    from asl_recognition.tracking import options_as_text

    prepare_environment()
    import clearml.task
    from clearml import Task
    from asl_recognition.pipeline import trigger

    # the service task as launched, then edited in the web UI
    task = Task.init(project_name="ASL", task_name=trigger.TASK_NAME,
                     task_type=Task.TaskTypes.service, auto_connect_arg_parser=False,
                     auto_resource_monitoring=False)
    params = {"Args/" + k: v for k, v in options_as_text(TriggerOptions()).items()}
    edits = {"Args/" + k: v for k, v in json.loads(sys.argv[2]).items()}
    task.set_parameters({**params, **edits})
    clearml.task.running_remotely = lambda: True  # emulation: the SDK's agent switch
    Task.running_locally = staticmethod(lambda: False)
    trigger.check_code_travels = lambda: None  # emulation: the commit is pushed

    def no_scheduler(options):  # mock: the server side of the TriggerScheduler
        raise SystemExit("SCHEDULER REACHED")

    trigger.build_scheduler = no_scheduler
    sys.exit(trigger.serve(TriggerOptions()))  # argv is empty on the agent: the defaults
""")


@pytest.mark.parametrize(
    "edit, said",
    [
        ({"poll_minutes": "0"}, "--poll-minutes: '0' is below the smallest allowed value 0.1"),
        ({"poll_minute": "5"}, "the task's Args parameters name no option: poll_minute ("),
    ],
)
def test_the_trigger_service_refuses_a_bad_web_ui_edit_in_one_line(tmp_path, edit, said):
    """The service read its edited options back with no handler: a traceback, exit 1."""
    script = tmp_path / "agent_trigger.py"
    script.write_text(TRIGGER_SCRIPT)
    proc = run_script(
        str(script),
        str(REPO_ROOT),
        json.dumps(edit),
        env=agent_env(tmp_path, "trigger"),
        timeout=DEADLINE_S,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "SCHEDULER REACHED" not in proc.stderr
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("trigger_on_new_data: error: ") and said in last

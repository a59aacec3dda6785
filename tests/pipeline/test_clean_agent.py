"""The clean-agent suite: every step started the way clearml-agent 3.0.3 starts it (issue #18).

What an agent does, and what each test here does the same way:

- **Checkout.** The agent clones the task's commit. Here: the files git tracks plus the
  untracked ones it does not ignore, committed in a fresh repository
  (``asl_testkit.clearml_stub.agent_checkout``), so there is no ``.venv``, no
  ``.cache/hand_models``, no ``workspace/``, and nothing ``make`` made.
- **Python.** The agent installs ``requirements.txt`` into a fresh venv. A fresh install of
  torch is about 5 GB, too much for every test run, so the agent's Python here is
  ``.venv/bin/python`` used as-is; that the requirements install on the agent's image is
  checked by another test with ``pip install --dry-run``.
- **Start.** ``python -u <script>`` with no arguments from the checkout's root, the variables
  of ``Worker._get_job_os_envs`` (``clearml_agent/commands/worker.py``) set under both names
  (``CLEARML_TASK_ID`` and ``TRAINS_TASK_ID`` ...), the agent's configuration file naming the
  servers, ``HOME`` a fresh folder, an empty ``ASL_HAND_MODELS``, no ``PYTHONPATH``
  (``asl_testkit.clearml_stub.agent_env`` lists each variable and where it comes from).
- **Server.** No ClearML server runs here: the processes talk to a *mock* ClearML API and files
  server on loopback (``MockClearmlServer``) that holds the task the agent was given, with its
  ``Args/*`` parameters, and records every request the process makes.

A step must get past its imports into ``Task.init`` (the mock sees the task's own calls), then
work, or fail with its own one line ``<script>: error: <reason>`` about its inputs: never a
traceback, never ``usage:``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from asl_testkit.clearml_stub import (
    MockClearmlServer,
    SeededTask,
    agent_checkout,
    agent_env,
)

from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA
from asl_recognition.pipeline.dag import ASL_DAG

pytestmark = pytest.mark.clean_agent

AGENT_PYTHON = sys.executable  # the project's .venv: see the module docstring
DEADLINE_S = 240
CHAIN_PER_CLASS = 6  # images per class for the chained run: enough for splits, fast on 2 cores


@dataclass
class Run:
    """One finished process and the mock server it talked to."""

    script: str
    task_id: str
    server: MockClearmlServer
    returncode: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        lines = [line for line in self.err.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def own_calls(self) -> list[str]:
        """Endpoints of requests about this run's own task (by id in the body)."""
        return [c.endpoint for c in self.server.calls if c.mentions(self.task_id)]

    def where(self) -> str:
        return f"{self.script} (exit {self.returncode}):\n{self.err[-3000:]}"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent's checkout of this working tree (uncommitted work included)."""
    return agent_checkout(REPO_ROOT, tmp_path_factory.mktemp("agent") / "checkout")


@pytest.fixture(scope="module")
def pip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pip cache for the module's processes, as an agent keeps one between tasks: the
    first hand-model fetch downloads the pinned wheel from PyPI, later ones read it from here."""
    return tmp_path_factory.mktemp("pip-cache")


def start(
    script: str,
    task_id: str,
    server: MockClearmlServer,
    checkout: Path,
    folder: Path,
    pip_cache: Path,
) -> subprocess.Popen:
    """``python -u <script>`` as the agent starts it for ``task_id``."""
    env = agent_env(task_id, server, folder / "home")
    hand_models = folder / "hand_models"
    hand_models.mkdir(parents=True, exist_ok=True)
    env.update(
        ASL_HAND_MODELS=str(hand_models),
        ASL_WORKSPACE=str(folder / "workspace"),
        PIP_CACHE_DIR=str(pip_cache),
        PYTHONFAULTHANDLER="1",  # a run past the deadline shows where it waited (SIGABRT)
    )
    return subprocess.Popen(
        [AGENT_PYTHON, "-u", script],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def dump_and_kill(proc: subprocess.Popen) -> tuple[str, str]:
    """Its output, once Python's fault handler has written every thread's stack (SIGABRT)."""
    proc.send_signal(signal.SIGABRT)
    try:
        return proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def finish(proc: subprocess.Popen, script: str, deadline: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        out, err = dump_and_kill(proc)
        pytest.fail(f"{script} ran past {DEADLINE_S} s under the agent:\n{err[-6000:]}")
    return proc.returncode, out, err


# ---------------------------------------------------------------------------------------------
# 1. every entry, alone on an empty server

CONTROLLER = "pipelines/asl_pipeline.py"


@dataclass
class Entry:
    script: str
    params: dict[str, str]  # the task's Args/* as the agent was given them
    type: str = "training"
    project: str = "ASL"


ENTRIES = {
    # a template the controller made: Args/source is there, empty (defect #9)
    "validate_raw": Entry("tasks/validate_raw.py", {"Args/source": ""}, "data_processing"),
    "publish_dataset": Entry("tasks/publish_dataset.py", {}, "data_processing"),
    "publish_landmarks": Entry("tasks/publish_landmarks.py", {}, "data_processing"),
    "train": Entry("tasks/train.py", {"Args/epochs": "3", "Args/model": "landmarks"}),
    "build_triton_repo": Entry("tasks/build_triton_repo.py", {}, "inference"),
    "optimize_model": Entry("tasks/optimize_model.py", {}, "custom"),
    "select_best": Entry("tasks/select_best.py", {}, "qc"),
    "loso_report": Entry("tasks/loso_report.py", {}, "qc"),
    # a controller enqueued with --mode queue lives in <project>/.pipelines/<name>
    "asl_pipeline": Entry(
        CONTROLLER, {}, "controller", f"{ASL_DAG.project}/.pipelines/{ASL_DAG.name}"
    ),
}


def test_every_entry_is_listed():
    """A new task script must be added to ENTRIES (tasks/predict.py is a user command)."""
    scripts = {p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("tasks/*.py")}
    listed = {e.script for e in ENTRIES.values()}
    assert scripts - {"tasks/predict.py"} == listed - {CONTROLLER}


@pytest.fixture(scope="module")
def entry_runs(tmp_path_factory, checkout, pip_cache, chain) -> dict[str, Run]:
    """Every entry started at once, each with its own empty mock server holding its task (the
    chained run goes on beside them)."""
    root = tmp_path_factory.mktemp("entries")
    started = {}
    for label, entry in ENTRIES.items():
        task_id = f"task-{label}"
        seeded = SeededTask(label, entry.project, entry.type, entry.params, entry.script)
        server = MockClearmlServer({task_id: seeded}).__enter__()
        proc = start(entry.script, task_id, server, checkout, root / label, pip_cache)
        started[label] = (task_id, server, proc)
    deadline = time.monotonic() + DEADLINE_S
    runs = {}
    try:
        for label, (task_id, server, proc) in started.items():
            code, out, err = finish(proc, ENTRIES[label].script, deadline)
            runs[label] = Run(ENTRIES[label].script, task_id, server, code, out, err)
    finally:
        for _, server, proc in started.values():
            if proc.poll() is None:
                proc.kill()
            server.__exit__(None, None, None)
    return runs


def one_line_refusal(run: Run, *reasons: str) -> None:
    """Refused after Task.init with the script's own one line, naming the input."""
    name = Path(run.script).stem
    assert run.returncode != 0, run.where()
    assert run.last_line.startswith(f"{name}: error: "), run.where()
    assert any(reason in run.last_line for reason in reasons), run.where()


EXPECTED: dict[str, Callable[[Run], None]] = {
    "publish_dataset": lambda run: one_line_refusal(run, "ASL_raw"),
    "publish_landmarks": lambda run: one_line_refusal(run, "'ASL'", "ASL latest", "dataset"),
    "train": lambda run: one_line_refusal(run, "dataset ASL"),
    "build_triton_repo": lambda run: one_line_refusal(run, "--train-task", "--model-id"),
    "optimize_model": lambda run: one_line_refusal(run, "--model-id"),
    "select_best": lambda run: one_line_refusal(run, "--model-id"),
    "loso_report": lambda run: one_line_refusal(run, "ASL_landmarks"),
}


@pytest.mark.parametrize("label", sorted(ENTRIES))
def test_entry_starts_under_the_agent(entry_runs, label):
    """Past the imports into Task.init on the agent's task; then works or says why in one line."""
    run = entry_runs[label]
    assert "usage:" not in run.err, f"stopped in argument parsing: {run.where()}"
    assert "Traceback" not in run.err, f"a traceback, not one line: {run.where()}"
    assert "tasks.started" in run.own_calls(), f"never reached Task.init: {run.where()}"
    if label in EXPECTED:
        EXPECTED[label](run)


def test_task_init_attaches_to_the_agents_task(entry_runs):
    """Under the agent's variables the SDK reuses the given task: it creates no task of its
    own for the step (``clearml/task.py``, ``Task.init``: ``running_remotely()`` branch)."""
    for label in ("publish_dataset", "select_best", "optimize_model"):
        run = entry_runs[label]
        assert "tasks.create" not in run.server.endpoints(), run.where()
        assert run.server.tasks[run.task_id]["status"] in ("in_progress", "failed"), label


def test_stored_args_are_the_options_the_step_runs_with(entry_runs):
    """``Args/epochs=3`` on the task stays 3: the agent's values win over the defaults (30)."""
    run = entry_runs["train"]
    assert run.server.parameter(run.task_id, "Args/epochs") == "3", run.where()
    assert run.server.parameter(run.task_id, "Args/model") == "landmarks", run.where()


def test_validate_raw_with_an_empty_source_parameter_uses_its_default_source(entry_runs):
    """Defect #9: a step template holds ``Args/source`` empty; the task must apply its default
    (``$ASL_RAW``, else the bundled sample) after ``connect``, not refuse with 'no --source'."""
    run = entry_runs["validate_raw"]
    assert run.returncode == 0, run.where()
    raw_id = run.server.parameter(run.task_id, "Outputs/raw_dataset_id")
    assert raw_id and raw_id in run.server.tasks, run.where()
    assert "dataset" in run.server.tasks[raw_id]["system_tags"]


def test_controller_on_the_agent_launches_its_first_step(entry_runs):
    """The controller task reads its run options from its own task, makes the step templates
    and enqueues the first step (the mock fails it at once: no agent pulls the queue)."""
    run = entry_runs["asl_pipeline"]
    enqueued = [c.body["task"] for c in run.server.calls_to("tasks.enqueue")]
    assert enqueued, run.where()
    first = run.server.tasks[enqueued[0]]
    assert first["name"] == ASL_DAG.steps[0].name
    assert first["parent"] == run.task_id
    # in the project the registry searches: under <project>/.pipelines/<name> (the SDK's
    # default) its models were invisible to models.get_all, which skips subprojects
    assert run.server.projects[first["project"]]["name"] == ASL_DAG.project


def test_no_request_hides_or_tags_the_asl_project(entry_runs):
    """Defect #3: nothing may give the ASL project the system tags ``pipeline``/``hidden``
    (``PipelineController`` does so for the project of a task it adopts)."""
    for run in entry_runs.values():
        assert_project_left_alone(run.server)


def test_every_model_query_is_filtered_by_project(entry_runs):
    """Defect #11: ``Model.query_models`` without ``project_name`` searches every project."""
    for run in entry_runs.values():
        assert_model_queries_in_a_project(run.server)


def assert_project_left_alone(server: MockClearmlServer) -> None:
    asl = {pid for pid, p in server.projects.items() if p["name"] == "ASL"}
    for call in server.calls_to("projects.update"):
        tags = set(call.body.get("system_tags") or [])
        assert not (call.body.get("project") in asl and tags & {"pipeline", "hidden"}), call
    for pid in asl:
        assert not set(server.projects[pid]["system_tags"]) & {"pipeline", "hidden"}


def assert_model_queries_in_a_project(server: MockClearmlServer) -> None:
    for call in server.calls_to("models.get_all"):
        if call.body.get("id"):
            continue  # a lookup by id is not a search
        assert call.body.get("project"), f"models.get_all searches every project: {call.body}"


# ---------------------------------------------------------------------------------------------
# 2. the steps one after another, each on a fresh agent, sharing one server


def small_source(dest: Path, per_class: int) -> Path:
    """``per_class`` bundled images of every class: the chain's raw data, quick to process."""
    for folder in sorted(p for p in SAMPLE_DATA.iterdir() if p.is_dir()):
        (dest / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:per_class]:
            shutil.copy2(image, dest / folder.name / image.name)
    return dest


# The chain's task ids differ from the lone entries' (task-<label>), which run at the same time:
# two processes of one task id share ClearML's edit lock, the file /tmp/clearml_<task id>.lock
# (clearml/backend_interface/task/task.py, Task._edit_lock, once CLEARML_PROC_MASTER_ID names the
# task). When both validate_raw runs had one id they stalled past the deadline in about one
# module run in four on busy cores, py-spy finding both in FileRLock.acquire (one in Task.init,
# one in upload_artifact). No agent runs one task in two processes at once.
CHAIN_IDS = "chain-"
CHAIN = [
    ("validate_raw", {"Args/source": "{source}", "Args/min_per_class": "1"}),
    ("publish_dataset", {"Args/raw_version": "{validate_raw.raw_dataset_id}"}),
    ("publish_landmarks", {"Args/dataset_version": "{publish_dataset.dataset_id}"}),
    (
        "train",
        {
            "Args/model": "landmarks",
            "Args/epochs": "3",
            "Args/dataset_version": "{publish_dataset.dataset_id}",
            "Args/landmarks_version": "{publish_landmarks.landmarks_id}",
            "Args/external": "data/roboflow_check",  # configs/run.yaml's, in the checkout
        },
    ),
    ("build_triton_repo", {"Args/train_task": f"{CHAIN_IDS}train"}),
]


class ChainRun(threading.Thread):
    """The chained steps, run in the background while the entries run (the file stays fast)."""

    def __init__(self, root: Path, checkout: Path, pip_cache: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.checkout, self.pip_cache = root, checkout, pip_cache
        self.runs: list[Run] = []
        self.server = MockClearmlServer()
        self.failure = ""

    def run(self) -> None:
        source = small_source(self.root / "raw", CHAIN_PER_CLASS)
        with self.server as server:
            for label, params in CHAIN:
                task_id = f"{CHAIN_IDS}{label}"
                params = {k: resolve(server, v, source) for k, v in params.items()}
                if any(v is None for v in params.values()):
                    self.failure = f"{label}: an earlier step recorded no output: {params}"
                    return
                entry = ENTRIES[label]
                seeded = SeededTask(label, "ASL", entry.type, params, entry.script)
                server.seed_task(task_id, seeded)
                proc = start(
                    entry.script, task_id, server, self.checkout, self.root / label, self.pip_cache
                )
                try:
                    out, err = proc.communicate(timeout=DEADLINE_S)
                except subprocess.TimeoutExpired:
                    out, err = dump_and_kill(proc)
                    self.failure = f"{entry.script} ran past {DEADLINE_S} s:\n{err[-6000:]}"
                self.runs.append(Run(entry.script, task_id, server, proc.returncode, out, err))
                if proc.returncode != 0 or self.failure:
                    return


@pytest.fixture(scope="module")
def chain(tmp_path_factory, checkout, pip_cache) -> ChainRun:
    """Started first, joined by the test that checks it."""
    thread = ChainRun(tmp_path_factory.mktemp("chain"), checkout, pip_cache)
    thread.start()
    return thread


def test_steps_chained_on_fresh_agents(chain):
    """validate_raw -> publish_dataset -> publish_landmarks -> train (landmarks, 3 epochs) ->
    build_triton_repo, each given the outputs the one before recorded (as the controller passes
    them on), each a fresh agent with an empty hand-model cache (defect #4: the steps that need
    the hand models fetch them) and all on one mock server."""
    chain.join(timeout=len(CHAIN) * DEADLINE_S)
    assert not chain.failure, chain.failure
    for run in chain.runs:
        assert run.returncode == 0 and "Traceback" not in run.err, run.where()
    assert [Path(r.script).stem for r in chain.runs] == [label for label, _ in CHAIN]
    train = chain.runs[3]
    assert "epoch 3:" in train.out and "epoch 4:" not in train.out, train.out[-2000:]
    # the recipe's external check is bundled, so it travels with the commit: all 52 photos read
    assert "(52 images)" in train.out + train.err, train.out[-2000:]
    # the model's hand detector record came through the upload and the agent's download
    hands = built_hands_config(chain.server, chain.root)
    assert json.loads(hands.parameters["detector"].string_value)["recrop"] is True
    assert_project_left_alone(chain.server)
    assert_model_queries_in_a_project(chain.server)


def built_hands_config(server: MockClearmlServer, root: Path):
    """``asl_hands/config.pbtxt`` of the repository build_triton_repo uploaded (its zip)."""
    import io
    import zipfile

    from asl_recognition.serving.configs import load_config

    (blob,) = [data for name, data in server.files.items() if name.endswith("triton_repo.zip")]
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith("asl_hands/config.pbtxt")]
        path = root / "asl_hands.config.pbtxt"
        path.write_bytes(archive.read(member))
    return load_config(path)


def resolve(server: MockClearmlServer, value: str, source: Path) -> str | None:
    """``{step.output}``: the output an earlier step recorded (``Outputs/*`` on its task)."""
    if value == "{source}":
        return str(source)
    if not value.startswith("{"):
        return value
    step, key = value.strip("{}").split(".")
    return server.parameter(f"{CHAIN_IDS}{step}", f"Outputs/{key}")

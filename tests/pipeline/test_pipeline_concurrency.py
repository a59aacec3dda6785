"""Two pipeline commands at once, a runner killed with ``kill -9``, and hostile run ids
(issue #19, defects 1, 6 and 17), with real ``asl_pipeline`` processes.

Each command is ``pipelines/asl_pipeline.py``'s own ``main()`` (recipe, ``choose_run``, the local
executor, its one-line errors) run by a small driver that swaps in a three-step DAG of stub
scripts: a real run takes minutes. A stub records which run executed it, can hold until the test
lets it go (drawing a progress bar meanwhile) and can start a grandchild in its own session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.local_executor import _last_error_line
from asl_recognition.pipeline.runs import STATE_NAME

STEPS = ("first", "second", "third")

OPTIONS = textwrap.dedent("""
    from dataclasses import dataclass
    from asl_recognition.options import option

    @dataclass
    class FirstOptions:
        label: str = option("x", "a label")

    @dataclass
    class NextOptions:
        value: str | None = option(None, "the previous step's id")
""")

# The real CLI's main() with the stub DAG; steps run from this folder (repo_root).
DRIVER = textwrap.dedent("""
    import functools, sys
    from pathlib import Path
    HERE = Path(__file__).resolve().parent
    sys.path[:0] = [str(HERE), REPO, REPO + "/pipelines"]
    import asl_pipeline
    import tiny_options
    from asl_recognition.pipeline import local_executor
    from asl_recognition.pipeline.dag import Dag, Step, step_params

    steps, previous = [], None
    for name in STEPS:
        wired = {"value": "${%s.outputs.id}" % previous} if previous else {}
        options = tiny_options.NextOptions if previous else tiny_options.FirstOptions
        steps.append(Step(name, f"steps/{name}.py", options, wired, ("id",)))
        previous = name
    steps = tuple(steps)
    asl_pipeline.ASL_DAG = Dag("tiny", "T", step_params(steps), steps)
    local_executor.LocalExecutor = functools.partial(local_executor.LocalExecutor, repo_root=HERE)
    sys.exit(asl_pipeline.main())
""").replace("REPO", repr(str(REPO_ROOT))).replace("STEPS", repr(STEPS))

STUB = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from pathlib import Path
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), REPO]
    import tiny_options
    from asl_recognition.options import parse
    name = Path(__file__).stem
    cls = tiny_options.FirstOptions if name == "first" else tiny_options.NextOptions
    args = parse(cls, None)
    run = os.environ["ASL_PIPELINE_RUN_ID"]
    control = Path(os.environ["CONTROL"])
    with open(control / "calls.jsonl", "a") as fh:
        fh.write(json.dumps({"step": name, "run": run, "pid": os.getpid()}) + "\\n")
    if os.environ.get("HOLD") == name:
        pids = {"step": os.getpid(), "guard": os.getppid()}
        if os.environ.get("GRANDCHILD"):
            sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
            pids["grandchild"] = subprocess.Popen(sleeper, start_new_session=True).pid
        print(f"{name}: cannot open shard 7: checksum mismatch", file=sys.stderr, flush=True)
        (control / "pids.tmp").write_text(json.dumps(pids))
        (control / "pids.tmp").rename(control / "pids.json")
        deadline, n = time.monotonic() + 40, 0
        while not (control / "go").exists() and time.monotonic() < deadline:
            n += 1
            try:  # an orphan whose runner is gone lives on: its writes fail
                print(f"\\r{n % 100:3d}%|###  | {n}/100 [00:01<00:04, 6.1batch/s]", end="",
                      file=sys.stderr, flush=True)
            except OSError:
                pass
            time.sleep(0.05)
    Path(os.environ["ASL_STEP_OUTPUTS"]).write_text(json.dumps({"id": f"{name}-{run}"}))
""").replace("REPO", repr(str(REPO_ROOT)))


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    """A folder with the driver, the stub steps and their options; the workspace beside it."""
    root = tmp_path / "tiny"
    (root / "steps").mkdir(parents=True)
    (root / "tiny_options.py").write_text(OPTIONS)
    (root / "run_pipeline.py").write_text(DRIVER)
    for name in STEPS:
        (root / "steps" / f"{name}.py").write_text(STUB)
    (tmp_path / "control").mkdir()
    return root


def env_for(tiny: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "ASL_"))}
    env.update(
        ASL_WORKSPACE=str(tiny.parent / "ws"),
        CONTROL=str(tiny.parent / "control"),
        CLEARML_OFFLINE_MODE="1",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def start(tiny: Path, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(tiny / "run_pipeline.py"), "--mode", "local-executor", *args],
        env=env_for(tiny, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_until(check: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def held_pids(tiny: Path) -> dict[str, int]:
    path = tiny.parent / "control" / "pids.json"
    return wait_until(lambda: path.exists() and json.loads(path.read_text()), what="step held")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def kill_all(pids: object) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def calls(tiny: Path) -> list[dict]:
    log = tiny.parent / "control" / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def states(tiny: Path) -> dict[str, dict]:
    runs = tiny.parent / "ws" / "pipeline_runs"
    return {p.parent.name: json.loads(p.read_text()) for p in runs.glob(f"*/{STATE_NAME}")}


def assert_each_step_ran_once_per_run(tiny: Path) -> None:
    """No two runners shared a run: each run's steps ran once, and its state is its own."""
    executed = Counter((c["run"], c["step"]) for c in calls(tiny))
    assert executed and max(executed.values()) == 1, executed
    for run_id, state in states(tiny).items():
        assert state["run_id"] == run_id
        for name, info in state["steps"].items():
            if info["status"] == "completed":
                assert info["outputs"] == {"id": f"{name}-{run_id}"}  # not another run's


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asl_pipeline: error: "), err
    return lines[0]


def test_a_second_command_refuses_the_run_in_progress(tiny: Path) -> None:
    """Defect 1: the second command used to join the first's unfinished run and execute every
    step again in the same folders. It is now refused in one line; the first ends alone."""
    first = start(tiny, HOLD="first")
    try:
        held_pids(tiny)
        (run_id,) = states(tiny)
        code, _, err = finish(start(tiny), timeout=20)
        assert code == 2
        line = one_line_error(err)
        assert (
            f"run {run_id} is in progress (step first running, started by pid {first.pid})" in line
        )
        assert "--new-run" in line
        code, _, err = finish(start(tiny, "--run-id", run_id), timeout=20)  # named: refused too
        assert code == 2 and f"run {run_id} is in progress" in one_line_error(err)
        (tiny.parent / "control" / "go").touch()
        code, out, err = finish(first)
    finally:
        first.kill()
    assert code == 0, err
    assert list(states(tiny)) == [run_id]
    assert states(tiny)[run_id]["status"] == "completed"
    assert_each_step_ran_once_per_run(tiny)


def test_two_commands_started_together_never_share_a_run(tiny: Path) -> None:
    """Whichever wins the race, a run has one runner: the other runs its own or is refused."""
    procs = [start(tiny), start(tiny)]
    results = [finish(proc) for proc in procs]
    for code, _, err in results:
        assert code == 0 or (code == 2 and "is in progress" in one_line_error(err)), err
    assert any(code == 0 for code, _, _ in results)
    assert all(s["status"] == "completed" for s in states(tiny).values())
    assert_each_step_ran_once_per_run(tiny)


def test_kill_9_of_the_runner_kills_the_step_and_its_children(tiny: Path) -> None:
    """Defect 6: the step (and a grandchild in its own session) outlived a killed runner and
    went on working beside the resumed run. They die now; the same command then resumes."""
    runner = start(tiny, HOLD="first", GRANDCHILD="1")
    pids = held_pids(tiny)
    try:
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        wait_until(lambda: not any(alive(p) for p in pids.values()), 5, f"{pids} die")
    finally:
        kill_all(pids.values())
    (run_id,) = states(tiny)
    code, out, err = finish(start(tiny))  # the run is no longer locked: it is resumed
    assert code == 0, err
    assert f"Pipeline tiny run {run_id}" in out and list(states(tiny)) == [run_id]
    assert states(tiny)[run_id]["steps"]["first"]["attempts"] == 2


def test_resume_refuses_while_a_step_of_the_run_is_alive(tiny: Path) -> None:
    """Defect 6: a step that outlives its runner (here: its guard killed first) still holds the
    run's lock, so neither the same command nor --run-id starts the run beside it."""
    runner = start(tiny, HOLD="first")
    pids = held_pids(tiny)
    try:
        os.kill(pids["guard"], signal.SIGKILL)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        assert alive(pids["step"])
        (run_id,) = states(tiny)
        for args in ((), ("--run-id", run_id), ("--resume",)):
            code, _, err = finish(start(tiny, *args), timeout=20)
            assert code == 2, err
            assert f"run {run_id} is in progress" in one_line_error(err)
    finally:
        kill_all(pids.values())
    assert [c["step"] for c in calls(tiny)] == ["first"]


@pytest.mark.parametrize("bad", ["../../x", "..", "ABS", "20240101-000000-abcdef/../x", "x"])
def test_run_ids_must_have_their_format(tiny: Path, bad: str) -> None:
    """Defect 17: --run-id named any folder (``../``, an absolute path); it must look like a
    new run's id. (ABS: an absolute folder in this test's tmp, which the old code wrote to.)"""
    bad = bad.replace("ABS", str(tiny.parent / "elsewhere"))
    code, _, err = finish(start(tiny, "--run-id", bad), timeout=20)
    assert code == 2
    assert f"--run-id {bad!r} is not a run id" in one_line_error(err)
    assert not calls(tiny) and not (tiny.parent / "ws" / "pipeline_runs").exists()


def test_the_reported_error_is_the_last_real_line_not_a_progress_bar(tiny: Path) -> None:
    """Defect 6: a killed step's error was its progress bar (``6.1batch/s]``)."""
    runner = start(tiny, HOLD="first")
    pids = held_pids(tiny)
    try:
        time.sleep(0.3)  # a few redraws of the bar
        os.kill(pids["step"], signal.SIGKILL)
        code, _, err = finish(runner)
    finally:
        kill_all(pids.values())
    assert code == 1
    assert (
        "step first failed (exit code -9): killed by signal SIGKILL after: "
        "first: cannot open shard 7: checksum mismatch" in err
    )

    bar = "\r 45%|####5     | 9/20 [00:01<00:01, 6.1batch/s]\r 50%|#####  | 10/20 [00:02, 5.9it/s]"
    tail = f"loading shard 7\nshard 7: checksum mismatch\n{bar}\r100%|##| 3/3 [00:00, 9.9file/s]"
    assert (
        _last_error_line(tail, -9) == "killed by signal SIGKILL after: shard 7: checksum mismatch"
    )
    assert _last_error_line(tail + "\nValueError: bad shard\n", 1) == "ValueError: bad shard"
    assert _last_error_line(bar, 3) == "no error message on stderr"


# ----- two writers on the local dataset store and model registry ---------------------------
WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    sys.path.insert(0, REPO)
    from asl_recognition.registry.base import NewModel
    from asl_recognition.registry.local import LocalModelRegistry
    from asl_recognition.store.local import LocalDatasetStore
    what, root, me, go = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    src = root.parent / f"src-{me}"
    src.mkdir(exist_ok=True)
    (src / "model.onnx").write_bytes(b"onnx " + me.encode())
    (src / "classes.txt").write_text("A\\\\nB\\\\n")
    while not go.exists():
        time.sleep(0.005)
    for n in range(ROUNDS):
        if what == "store":
            LocalDatasetStore(root).create("ASL_landmarks", {"model.onnx": src / "model.onnx"})
        else:
            registry = LocalModelRegistry(root)
            new = NewModel("asl", str(src / "model.onnx"), str(src / "classes.txt"))
            model = registry.register(new)
            registry.promote(model.id)
""").replace("REPO", repr(str(REPO_ROOT)))
WRITERS, ROUNDS = 4, 8


def run_writers(tmp_path: Path, what: str) -> Path:
    """WRITERS processes doing ROUNDS writes each, released together."""
    root, go = tmp_path / what, tmp_path / "go"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.replace("ROUNDS", str(ROUNDS)))
    procs = [
        subprocess.Popen([sys.executable, str(script), what, str(root), str(n), str(go)])
        for n in range(WRITERS)
    ]
    time.sleep(1.0)  # every writer imported and waiting
    go.touch()
    assert [p.wait(timeout=60) for p in procs] == [0] * WRITERS
    return root


def test_two_writers_keep_dataset_versions_unique(tmp_path: Path) -> None:
    from asl_recognition.store.local import LocalDatasetStore

    versions = [v.version for v in LocalDatasetStore(run_writers(tmp_path, "store"))._all()]
    assert len(versions) == WRITERS * ROUNDS
    assert len(set(versions)) == len(versions), Counter(versions).most_common(3)


def test_two_writers_keep_model_versions_unique_and_one_production(tmp_path: Path) -> None:
    from asl_recognition.registry.base import PRODUCTION_TAG
    from asl_recognition.registry.local import LocalModelRegistry

    records = LocalModelRegistry(run_writers(tmp_path, "registry")).list("asl")
    versions = [r.version for r in records]
    assert len(versions) == WRITERS * ROUNDS
    assert len(set(versions)) == len(versions), Counter(versions).most_common(3)
    production = [r.version for r in records if PRODUCTION_TAG in r.tags]
    assert len(production) == 1, production

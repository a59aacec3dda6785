"""Which run ``pipelines/asl_pipeline.py`` executes, with real processes: contradictory run
options are refused before any work, and validate_raw's default source is part of a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from asl_testkit.cli import run_script

PIPELINE = ("pipelines/asl_pipeline.py", "--mode", "local-executor")
SOME_ID = "20240101-000000-abcdef"


@pytest.mark.parametrize(
    "args, said",
    [
        (("--run-id", SOME_ID, "--new-run"), "--run-id and --new-run each choose the run"),
        (("--resume", "--new-run"), "--resume and --new-run each choose the run"),
        (("--run-id", SOME_ID, "--resume"), "--run-id and --resume each choose the run"),
        (
            ("--list-runs", "--from-step", "train", "--run-id", "bogus"),
            "--list-runs only lists this machine's runs: it takes no --run-id, --from-step",
        ),
        (
            ("--mode", "dry-run", "--from-step", "train"),  # the last --mode counts
            "--from-step choose a local executor run: not in --mode dry-run",
        ),
    ],
)
def test_contradictory_run_options_are_refused(
    task_env: dict[str, str], asl_workspace: Path, args: tuple[str, ...], said: str
) -> None:
    """One option used to win in silence: the old run resumed without the new values, a new run
    started despite --resume, or the runs were listed with exit 0 despite a bogus id."""
    env = {**task_env, "ASL_RAW": str(asl_workspace / "missing")}  # a run would fail at once
    result = run_script(*PIPELINE, *args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert said in result.stderr.strip().splitlines()[-1]
    assert not (asl_workspace / "pipeline_runs").exists()


def test_another_asl_raw_is_another_run(task_env: dict[str, str], asl_workspace: Path) -> None:
    """validate_raw reads $ASL_RAW when it has no source: a command run with another $ASL_RAW
    used to resume the unfinished run of the sample, and go on with the data it validated."""
    env = {k: v for k, v in task_env.items() if k != "ASL_RAW"}
    refused = "validate_raw.min_per_class=100000"  # each run fails at its first step
    other = asl_workspace / "other"
    assert run_script(*PIPELINE, refused, env=env).returncode == 2
    assert run_script(*PIPELINE, refused, env={**env, "ASL_RAW": f"k={other}"}).returncode == 2
    states = asl_workspace.glob("pipeline_runs/*/state.json")
    sources = sorted(json.loads(p.read_text())["params"]["validate_raw/source"] for p in states)
    assert sources == [["data/sample"], [f"k={other}"]]


def test_a_run_recorded_by_other_code_is_one_line(
    task_env: dict[str, str], asl_workspace: Path
) -> None:
    """A run recorded by an older checkout names a parameter this code lacks: resuming it had
    ended in a traceback ("unknown pipeline parameters")."""
    refused = "validate_raw.min_per_class=100000"  # the run fails at its first step
    assert run_script(*PIPELINE, refused, env=task_env).returncode == 2
    (state_path,) = asl_workspace.glob("pipeline_runs/*/state.json")
    state = json.loads(state_path.read_text())
    state["params"]["build_triton_repo/kind"] = "onnx"  # an option older code had
    state_path.write_text(json.dumps(state))
    result = run_script(*PIPELINE, "--run-id", state["run_id"], env=task_env)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"asl_pipeline: error: run {state['run_id']} was recorded by other")
    assert "Traceback" not in result.stderr


def test_from_step_without_a_recorded_run_is_one_line(
    task_env: dict[str, str], asl_workspace: Path
) -> None:
    """With no run to continue, --from-step had started a new run of every step in silence."""
    result = run_script(*PIPELINE, "--from-step", "train", env=task_env)
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("asl_pipeline: error: --from-step train re-runs a step of a recorded")
    assert not list(asl_workspace.glob("pipeline_runs/*/state.json"))


@pytest.mark.parametrize(
    "override, said",
    [
        ("publish_dataset.split=1,0,0", "--split 1 0 0: the val, test split(s) would be empty"),
        ("publish_dataset.split=", "--split needs three numbers TRAIN VAL TEST"),
        ("publish_dataset.split=(5)", "--split: '(5)' is not a list"),
        ("publish_dataset.holdout_source=('massey')", "--holdout-source: \"('massey')\" is not"),
    ],
)
def test_a_step_option_its_step_would_refuse_is_refused_at_launch(
    task_env: dict[str, str], asl_workspace: Path, override: str, said: str
) -> None:
    """A split publish_dataset refuses passed the recipe check: validate_raw ran and published
    first, and re-running the same command resumed the run with the same split. ``(5)`` ended
    the launch in a traceback; ``('massey')`` held out the sources m, a, s and e."""
    result = run_script(*PIPELINE, "--config", "configs/smoke.yaml", override, env=task_env)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert said in result.stderr.strip().splitlines()[-1]
    assert not (asl_workspace / "pipeline_runs").exists()

"""The real DAG on the bundled images through the local executor (configs/smoke.yaml: make run's
recipe with a few training steps), with a real injected failure
(the Triton repository path is a file, so build_triton_repo cannot write there) and a resume
that reuses the four completed steps.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from asl_testkit.cli import recipe_steps, run_script

SMOKE = "configs/smoke.yaml"
PIPELINE = ["pipelines/asl_pipeline.py", "--mode", "local-executor", "--config", SMOKE]
# the steps the smoke recipe runs (it trains the landmark model: every step of the DAG)
STEPS = recipe_steps(SMOKE)
DONE = len(STEPS) - 1  # every step before the blocked build_triton_repo


def run_pipeline(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "ASL_"))}
    env.update(ASL_WORKSPACE=str(tmp_path / "ws"), HOME=str(tmp_path))
    return run_script(*PIPELINE, *args, env=env, timeout=1200)


@pytest.mark.slow
def test_real_pipeline_fails_with_step_error_then_resumes(tmp_path):
    blocked = tmp_path / "triton_repo"
    blocked.write_text("a file where the repository folder should go")
    args = (f"build_triton_repo.repo={blocked}",)

    first = run_pipeline(tmp_path, *args)
    assert first.returncode != 0
    assert "asl_pipeline: step build_triton_repo failed (exit code" in first.stderr
    for n, step in enumerate(STEPS, 1):
        assert (
            f"==> [{n}/{len(STEPS)}] {step}" in first.stdout
        )  # every step announced with progress
    (state_path,) = (tmp_path / "ws" / "pipeline_runs").glob("*/state.json")
    state = json.loads(state_path.read_text())
    assert [state["steps"][s]["status"] for s in STEPS] == ["completed"] * DONE + ["failed"]
    outputs = {s: state["steps"][s].get("outputs", {}) for s in STEPS}
    # ids flow between steps: each consumer was called with its producer's id

    def given(step: str, flag: str) -> str:
        (value,) = [a.split("=", 1)[1] for a in state["steps"][step]["argv"] if a.startswith(flag)]
        return value

    assert outputs["validate_raw"]["raw_dataset_id"] == given("publish_dataset", "--raw-version=")
    assert outputs["publish_dataset"]["dataset_id"] == given("train", "--dataset-version=")
    assert outputs["train"]["model_id"] == given("select_best", "--model-id=")
    assert outputs["select_best"] == {
        "production_model_id": outputs["train"]["model_id"],
        "promoted": True,
    }
    ended = {s: state["steps"][s]["ended"] for s in STEPS[:DONE]}

    blocked.unlink()
    second = run_pipeline(tmp_path, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    # select_best reads the registry's production model, which may have changed while the
    # run was stopped: it runs again; the steps before it are reused.
    before = STEPS.index("select_best")
    for n, step in enumerate(STEPS[:before], 1):
        assert f"==> [{n}/{len(STEPS)}] {step}: reused" in second.stdout
    assert f"[{before + 1}/{len(STEPS)}] select_best: run again" in second.stdout
    state = json.loads(state_path.read_text())  # the same run, resumed
    assert state["status"] == "completed"
    kept = {s: ended[s] for s in STEPS[:before]}
    assert {s: state["steps"][s]["ended"] for s in STEPS[:before]} == kept
    assert state["steps"]["select_best"]["outputs"]["production_model_id"] == (
        outputs["train"]["model_id"]  # still production: built as before
    )
    assert state["steps"]["build_triton_repo"]["attempts"] == 2
    repo = Path(state["steps"]["build_triton_repo"]["outputs"]["repo"])
    assert repo == blocked and (repo / "asl" / "config.pbtxt").is_file()
    sessions = (tmp_path / "ws" / "offline_sessions.jsonl").read_text().splitlines()
    assert len(sessions) == len(STEPS) + 2  # one per executed step (the last two twice)
    assert all(Path(json.loads(s)["zip"]).is_file() for s in sessions)

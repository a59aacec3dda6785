"""The pipeline controller on an agent, run to its end: its exit status is the pipeline's.

clearml-agent marks a task from its process's exit status: 0 completed, anything else failed
(``clearml_agent/commands/worker.py``, ``Worker.execute``; ``helper/process.py``). Under the
agent the SDK's ``Task.close`` marks nothing (``clearml/task.py``, ``Task.__shutdown``: not when
``running_remotely()``), so the controller's task is still ``in_progress`` when the pipeline
ends. The controller starts as in ``test_clean_agent.py``: ``python -u pipelines/asl_pipeline.py``
in the agent's checkout with the agent's variables, against the **mock** ClearML server. Here the
mock also stands in for the step agents: a step it is given (``tasks.enqueue``) is completed at
once with the outputs the next steps read, so the real ``PipelineController`` launches, waits
for and finishes every step.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asl_testkit.clearml_stub import (
    MockClearmlServer,
    SeededTask,
    _hyperparams,
    agent_checkout,
    agent_env,
)

from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.dag import ASL_DAG

pytestmark = pytest.mark.clean_agent

CONTROLLER = "pipelines/asl_pipeline.py"
CONTROLLER_ID = "c0ffee" * 5 + "00"
# raw_version given and a CNN: four steps (no validate_raw, no publish_landmarks)
PARAMS = {"Args/raw_version": "mock-raw", "Args/train/model": "cnn"}


def step_outputs() -> dict[str, set[str]]:
    """Each step's outputs that another step reads (``${step.outputs.key}``)."""
    wanted: dict[str, set[str]] = {}
    for step in ASL_DAG.steps:
        for ref in step.wired.values():
            for name, key in re.findall(r"\$\{(\w+)\.outputs\.(\w+)\}", str(ref)):
                wanted.setdefault(name, set()).add(key)
    return wanted


class StepAgents(MockClearmlServer):
    """The mock server, and a **mock** of the step agents: an enqueued step completes at once."""

    outputs = step_outputs()

    def on_tasks__enqueue(self, body: Any) -> Any:
        task = self.tasks[body["task"]]
        if task["id"] == CONTROLLER_ID:
            return super().on_tasks__enqueue(body)
        keys = self.outputs.get(task["name"], set())
        made = _hyperparams({f"Outputs/{k}": f"mock-{k}" for k in keys}).get("Outputs", {})
        task["hyperparams"].setdefault("Outputs", {}).update(made)
        task.update(status="completed", status_reason="mock step agent")
        return {"queued": 1, "updated": 1, "fields": {}}


def run_controller(server: StepAgents, checkout: Path, home: Path) -> subprocess.CompletedProcess:
    server.tasks[CONTROLLER_ID]["status"] = "queued"
    env = agent_env(CONTROLLER_ID, server, home)
    env["ASL_WORKSPACE"] = str(home / "workspace")
    return subprocess.run(
        [sys.executable, "-u", CONTROLLER],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def enqueued(server: StepAgents, since: int) -> list[str]:
    calls = server.calls[since:]
    return [server.tasks[c.body["task"]]["name"] for c in calls if c.endpoint == "tasks.enqueue"]


def test_a_pipeline_whose_steps_all_complete_exits_0_on_the_agent(tmp_path):
    """Every step completed, then reused from the cache: the controller exits 0 both times,
    so the agent marks it completed. ``is_successful`` asked for a completed controller task
    (still ``in_progress`` under the agent) and counted cached steps as failed: exit 1."""
    checkout = agent_checkout(REPO_ROOT, tmp_path / "checkout")
    project = f"{ASL_DAG.project}/.pipelines/{ASL_DAG.name}"
    seeded = SeededTask(ASL_DAG.name, project, "controller", PARAMS, CONTROLLER)
    with StepAgents({CONTROLLER_ID: seeded}) as server:
        first = run_controller(server, checkout, tmp_path / "first")
        assert first.returncode == 0, first.stderr[-3000:]
        assert enqueued(server, 0) == [
            "publish_dataset",
            "train",
            "select_best",
            "build_triton_repo",
        ]
        assert server.tasks[CONTROLLER_ID]["status"] != "failed"
        since = len(server.calls)
        second = run_controller(server, checkout, tmp_path / "second")
        assert second.returncode == 0, second.stderr[-3000:]
        assert set(enqueued(server, since)) == {"select_best", "build_triton_repo"}  # rest cached

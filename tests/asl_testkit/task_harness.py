"""Run a task script's ``main`` in-process on a **mock** ClearML task.

``Task.init`` is replaced by an autospec of the real classmethod returning ``mock_task`` (an
autospec of ``clearml.Task``), so every SDK call the script makes is checked against the real
signatures and can be asserted on. What ``init_task`` does to the test process besides (offline
environment, signal handlers) is switched off; ``offline`` says which kind of run it emulates.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping
from unittest import mock

import pytest
from clearml import Task

from asl_recognition import tracking
from asl_recognition.paths import REPO_ROOT

Connect = Callable[[Mapping[str, str], str], Mapping[str, str]]


def make_mock_task(tmp_path: Path, connect: Connect | None = None) -> Any:
    """MockTask: ``connect`` hands back what it is given (a first, local run) unless told
    otherwise (an agent's run hands back the values the task holds)."""
    mock_task = mock.create_autospec(Task, instance=True)
    mock_task.name, mock_task.artifacts = "mock-task", {}
    mock_task.connect.side_effect = connect or (lambda mapping, name=None: dict(mapping))
    mock_task.get_offline_mode_folder.return_value = tmp_path / "offline-mock"
    mock_task.get_project_name.return_value = "ASL"
    return mock_task


def load_task_module(script: str) -> ModuleType:
    """``tasks/<script>.py`` as a module (its ``main`` not run)."""
    path = REPO_ROOT / "tasks" / f"{script}.py"
    spec = importlib.util.spec_from_file_location(f"task_{script}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def patch_task_init(
    monkeypatch: pytest.MonkeyPatch, mock_task: Any, tmp_path: Path, offline: bool
) -> Any:
    """``init_task`` on ``mock_task``; returns the autospec'd ``Task.init`` (MockTaskInit)."""
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("ASL_STEP_OUTPUTS", raising=False)
    monkeypatch.setattr(tracking, "prepare_environment", lambda: offline)
    monkeypatch.setattr(tracking, "install_signal_handlers", lambda: None)
    monkeypatch.setattr(tracking, "arm_stop_deadline", lambda *a: None)
    mock_init = mock.create_autospec(Task.init, return_value=mock_task)
    monkeypatch.setattr(Task, "init", mock_init)
    return mock_init


def recorded_outputs(mock_task: Any) -> dict[str, Any]:
    """The ``Outputs/*`` parameters the task set."""
    return {
        c.args[0].removeprefix(f"{tracking.OUTPUT_SECTION}/"): c.args[1]
        for c in mock_task.set_parameter.call_args_list
        if c.args[0].startswith(f"{tracking.OUTPUT_SECTION}/")
    }

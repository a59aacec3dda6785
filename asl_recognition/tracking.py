"""The one place that talks to ``clearml.Task``.

Every task script calls :func:`init_task`. With a configured server (``clearml.conf`` or the
``CLEARML_API_*`` variables) the task is a normal ClearML task; with none it runs in ClearML's
offline mode and its session zip can later be imported with ``Task.import_offline_session``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asl_recognition.paths import REPO_ROOT, workspace

OUTPUTS_ENV = "ASL_STEP_OUTPUTS"
OUTPUT_SECTION = "Outputs"


def server_configured() -> bool:
    """True when a ClearML server is configured and offline mode is not forced."""
    if os.environ.get("CLEARML_OFFLINE_MODE", "").lower() in ("1", "true", "yes"):
        return False
    if os.environ.get("ASL_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if os.environ.get("CLEARML_API_HOST") and os.environ.get("CLEARML_API_ACCESS_KEY"):
        return True
    conf = os.environ.get("CLEARML_CONFIG_FILE") or str(Path.home() / "clearml.conf")
    try:
        text = Path(conf).read_text(encoding="utf-8")
    except OSError:
        return False
    return "access_key" in text and "api_server" in text


def prepare_environment() -> bool:
    """Set the offline-mode environment before ``clearml`` is imported; returns ``offline``."""
    offline = not server_configured()
    if offline:
        os.environ["CLEARML_OFFLINE_MODE"] = "1"
        os.environ.setdefault(
            "CLEARML_CONFIG_FILE", str(REPO_ROOT / "config" / "clearml-offline.conf")
        )
        os.environ.setdefault("CLEARML_CACHE_DIR", str(workspace() / "clearml_cache"))
    return offline


def _restore_types(connected: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A value edited in the web UI comes back as text when its default was None or a list."""
    out = dict(connected)
    for key, default in defaults.items():
        value = out.get(key, default)
        if default is None and value in ("", "None", None):
            out[key] = None
        elif isinstance(default, (list, tuple)) and isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = [v for v in value.replace(",", " ").split() if v]
            out[key] = type(default)(parsed)
    return out


@dataclass
class TaskContext:
    """A running ClearML task (online or offline) plus the options it ended up with."""

    task: Any
    params: dict[str, Any]
    offline: bool
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def logger(self) -> Any:
        return self.task.get_logger()

    def upload_artifact(self, name: str, artifact: Any, **kwargs: Any) -> None:
        """Files and dicts become task artifacts; offline they are copied into the session."""
        self.task.upload_artifact(
            name=name, artifact_object=artifact, wait_on_upload=True, **kwargs
        )

    def record_outputs(self, **values: Any) -> None:
        """Publish step outputs (ids, paths, metrics) for the next pipeline step.

        They are written as ``Outputs/*`` task parameters, which a ClearML pipeline references as
        ``${step.parameters.Outputs/key}``, and as JSON to ``$ASL_STEP_OUTPUTS`` for the local
        executor.
        """
        self.outputs.update(values)
        for key, value in values.items():
            self.task.set_parameter(f"{OUTPUT_SECTION}/{key}", value)
        target = os.environ.get(OUTPUTS_ENV)
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_text(json.dumps(self.outputs, indent=2, default=str))

    def session_folder(self) -> Path | None:
        if not self.offline:
            return None
        return Path(self.task.get_offline_mode_folder())

    def close(self) -> Path | None:
        """Close the task; offline, return the session zip to import into a server later."""
        folder = self.session_folder()
        self.task.close()
        if folder is None:
            return None
        zipped = folder.parent / f"{folder.name}.zip"
        record = {
            "task": self.task.name,
            "project": self.task.get_project_name(),
            "zip": str(zipped),
        }
        with open(workspace() / "offline_sessions.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"ClearML offline session: {zipped}")
        return zipped


def init_task(
    project: str,
    name: str,
    params: dict[str, Any],
    task_type: str = "data_processing",
    tags: list[str] | None = None,
) -> TaskContext:
    """``Task.init`` + ``task.connect(params)``: a web-UI clone runs with its edited values."""
    offline = prepare_environment()
    from clearml import Task

    task = Task.init(
        project_name=project,
        task_name=name,
        task_type=getattr(Task.TaskTypes, task_type),
        tags=tags,
        reuse_last_task_id=False,
        auto_connect_arg_parser=False,
        auto_resource_monitoring=not offline,
    )
    connected = task.connect(dict(params), name="Args")
    return TaskContext(task=task, params=_restore_types(connected, params), offline=offline)

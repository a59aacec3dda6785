"""The one place that talks to ``clearml.Task``.

Every task script calls :func:`init_task`. With a configured server (``clearml.conf``, the
``CLEARML_API_*`` variables, or an agent's ``CLEARML_TASK_ID``/``CLEARML_AUTH_TOKEN``) the task
is a normal ClearML task that uploads its models and artifacts; with none it runs in ClearML's
offline mode and its session zip can later be imported with ``Task.import_offline_session``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn, TypeVar

from asl_recognition.options import OptionError, as_params, from_mapping, missing, parse
from asl_recognition.paths import REPO_ROOT, workspace
from asl_recognition.processes import handle_stop_signals

OUTPUTS_ENV = "ASL_STEP_OUTPUTS"
OUTPUT_SECTION = "Outputs"
OPTIONS_SECTION = "Args"
AGENT_ENV = ("CLEARML_TASK_ID", "CLEARML_AUTH_TOKEN")
OUTPUT_URI_ENV = "ASL_OUTPUT_URI"
TRUTHY = ("1", "true", "yes", "on")
STOP_DEADLINE_S = 8.0  # SIGTERM to exit, at most (a supervisor's usual grace is 10 s)
T = TypeVar("T")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUTHY


def server_configured() -> bool:
    """True when the SDK would talk to a server: the same test as ``clearml.Session``.

    An agent runs a step with ``CLEARML_TASK_ID`` and may authenticate with
    ``CLEARML_AUTH_TOKEN`` alone (no keys in any file); otherwise credentials come from the
    ``CLEARML_API_ACCESS_KEY`` variable or ``api.credentials`` of the SDK's own configuration
    files, read with the SDK's loader. Forced offline mode wins.
    """
    if _env_true("CLEARML_OFFLINE_MODE") or _env_true("ASL_OFFLINE"):
        return False
    if any(os.environ.get(name) for name in AGENT_ENV):
        return True
    from clearml.backend_api.config import load
    from clearml.backend_api.session.defs import ENV_ACCESS_KEY

    try:
        configured = load().get("api.credentials.access_key", None)
    except Exception:  # an unreadable clearml.conf: the SDK itself would fail on it too
        configured = None
    return bool(ENV_ACCESS_KEY.get(default=configured))


def output_uri() -> str | bool:
    """Where models and artifacts are uploaded: ``$ASL_OUTPUT_URI`` or the files server.

    ``True`` is the SDK's way to say "the configured files server"; ``ASL_OUTPUT_URI=none``
    keeps weights on the machine that trained them (only sensible on one machine).
    """
    value = os.environ.get(OUTPUT_URI_ENV, "").strip()
    if value.lower() in ("none", "false", "off"):
        return False
    return value or True


def _stop_on_signal(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGINT end the task like an exception: ``finally`` and ClearML's close run."""
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Make SIGTERM and SIGINT stop the process even after ``Task.init``.

    ClearML chains to the handler it finds at ``Task.init`` and treats ``SIG_DFL`` as none
    (``exit_hooks.signal_handler``: ``if not org_handler``), so with the default in place a
    SIGTERM is swallowed. A real handler installed first lets ClearML record the abort and then
    stop the process.
    """
    handle_stop_signals(_stop_on_signal, keep_installed=True)


def arm_stop_deadline(seconds: float = STOP_DEADLINE_S) -> None:
    """After ``Task.init``: a SIGTERM ends the process within ``seconds`` whatever happens.

    ClearML's hook first closes the task (flushing logs and events), which can take longer
    than a supervisor waits on a busy machine; past the deadline the process exits with the
    signal's code, the task's record written as far as it got.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    hook = signal.getsignal(signal.SIGTERM)

    def deadline_then_hook(signum: int, frame: Any) -> None:
        timer = threading.Timer(seconds, os._exit, args=(128 + signum,))
        timer.daemon = True
        timer.start()
        if callable(hook):
            hook(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, deadline_then_hook)


def prepare_environment() -> bool:
    """Set the offline-mode environment before ``clearml`` is imported; returns ``offline``."""
    offline = not server_configured()
    if offline:
        os.environ["CLEARML_OFFLINE_MODE"] = "1"
        os.environ.setdefault(
            "CLEARML_CONFIG_FILE", str(REPO_ROOT / "config" / "clearml-offline.conf")
        )
        os.environ.setdefault("CLEARML_CACHE_DIR", str(workspace() / "clearml_cache"))
        if "clearml" in sys.modules:
            # server_configured() read the SDK's configuration, which imported clearml; the SDK
            # froze CLEARML_OFFLINE_MODE at import (class attributes), so tell it again.
            from clearml import Task

            Task.set_offline(True)
    return offline


@dataclass
class TaskContext:
    """A running ClearML task (online or offline) plus the options it ended up with."""

    task: Any
    options: Any
    offline: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0  # set by a task whose outputs are recorded but whose result is unusable
    summary: str = ""  # the task's last line on stdout, printed after ClearML's close

    def fail(self, message: str, code: int = 2) -> NoReturn:
        """Close the task and exit with a one-line reason (the task's log keeps it too)."""
        print(message, file=sys.stderr)
        self.task.get_logger().report_text(message)
        self.close()
        raise SystemExit(code)

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


def options_as_text(options: Any) -> dict[str, str]:
    """The values as the web UI shows them, as text that ``from_mapping`` reads back."""
    text = {}
    for name, value in as_params(options).items():
        if value is None:
            text[name] = ""
        elif isinstance(value, (list, tuple)):
            text[name] = json.dumps(list(value))
        else:
            text[name] = str(value)
    return text


def connect_options(task: Any, options: T, section: str = OPTIONS_SECTION) -> T:
    """``task.connect`` the options under ``section``; the values the task holds, typed.

    Connected as text, the SDK's remote branch (an agent, a web-UI clone) hands back exactly
    what the task holds, and the options class alone types it. Connected typed, the SDK re-casts
    an edit by the default's type first: ``"abc"`` for a list option becomes ``list("abc")``
    (its characters), and ``"forty"`` or ``"32.0"`` for an int is replaced by the default with
    only a log warning, so the task would run with values nobody chose.
    """
    connected = task.connect(options_as_text(options), name=section)
    return from_mapping(type(options), dict(connected), strict=False)


def init_task(
    project: str,
    name: str,
    options: Any,
    task_type: str = "data_processing",
    tags: list[str] | None = None,
) -> TaskContext:
    """``Task.init`` + ``task.connect`` of the typed options under ``Args``.

    Under an agent (or for a web-UI clone) ``connect`` returns the values stored on the task,
    as text where the UI edited them; they are typed again from the options class. A value that
    does not fit, or a required option left empty, ends the task here with one line (exit 2),
    after ClearML has the task, so the failure shows in the web UI.
    """
    offline = prepare_environment()
    install_signal_handlers()
    from clearml import Task

    task = Task.init(
        project_name=project,
        task_name=name,
        task_type=getattr(Task.TaskTypes, task_type),
        tags=tags,
        reuse_last_task_id=False,
        auto_connect_arg_parser=False,
        auto_resource_monitoring=not offline,
        # plots are reported explicitly; the savefig hook would upload every figure twice
        auto_connect_frameworks={"matplotlib": False},
        output_uri=None if offline else output_uri(),
    )
    arm_stop_deadline()
    ctx = TaskContext(task=task, options=options, offline=offline)
    try:
        ctx.options = connect_options(task, options)
    except OptionError as exc:
        ctx.fail(f"{name}: error: {exc}")
    absent = missing(ctx.options)
    if absent:
        ctx.fail(
            f"{name}: error: missing required option(s) {', '.join(absent)}: give them on the "
            f"command line or as {OPTIONS_SECTION}/<name> parameters of the task"
        )
    return ctx


Work = Callable[[TaskContext], Mapping[str, Any]]


def task_entry(
    options_cls: type[T],
    task_type: str,
    refused: tuple[type[BaseException], ...] = (),
    refusal_code: int = 2,
    name: Callable[[T], str] | None = None,
    resolve: Callable[[T], None] | None = None,
) -> Callable[[Work], Callable[[list[str] | None], int]]:
    """Turn a task script's work function into its ``main(argv=None) -> int``.

    Every task lives the same way: parse the options (the script's docstring is the help),
    ``Task.init`` and connect them, run ``work(ctx)``, record the outputs it returns, close. One
    of the ``refused`` errors ends the task with the one line ``<script>: error: <reason>`` and
    ``refusal_code``, after ClearML has the task, so the reason shows in the web UI too.
    ``name`` names the ClearML task (default: the script's name); ``resolve`` fills
    environment-dependent defaults before they are connected, so the task records them.
    """

    def wrap(work: Work) -> Callable[[list[str] | None], int]:
        script = Path(work.__globals__.get("__file__") or work.__module__).stem
        doc = work.__globals__.get("__doc__")

        def main(argv: list[str] | None = None) -> int:
            options = parse(options_cls, argv, doc)
            if resolve is not None:
                resolve(options)
            ctx = init_task("ASL", name(options) if name else script, options, task_type)
            try:
                outputs = work(ctx)
            except refused as exc:
                ctx.fail(f"{script}: error: {exc}", refusal_code)
            ctx.record_outputs(**outputs)
            ctx.close()
            if ctx.summary:
                print(ctx.summary)
            return ctx.exit_code

        return main

    return wrap

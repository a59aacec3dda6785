"""The one place that talks to ``clearml.Task``.

Every task script calls :func:`init_task` (through :func:`task_entry`). With a configured server
(:mod:`~asl_recognition.clearml_env` decides) the task is a normal ClearML task that uploads its
models and artifacts; with none it runs in ClearML's offline mode and its session zip can later
be imported with ``Task.import_offline_session``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NoReturn, Sequence, TypeVar

from asl_recognition.clearml_env import (
    not_configured,
    output_uri,
    prepare_environment,
    record_requirements_file,
)
from asl_recognition.options import (
    OptionError,
    as_params,
    missing,
    parse,
    settle,
    specs,
    value_as_text,
)
from asl_recognition.paths import workspace
from asl_recognition.stop_signals import arm_stop_deadline, install_signal_handlers

OUTPUTS_ENV = "ASL_STEP_OUTPUTS"
OUTPUT_SECTION = "Outputs"
OPTIONS_SECTION = "Args"
# Plots are reported explicitly (the savefig hook would upload every figure twice); models are
# registered explicitly (the registry): the PyTorch binding would make every torch.save (each
# epoch's checkpoint) an output model, a file:// path to a temp file under an agent. Keys as
# Task.init's should_connect reads them (clearml/task.py, Task.init).
FRAMEWORK_BINDINGS = {"matplotlib": False, "pytorch": False}
T = TypeVar("T")


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
        """Mark the task failed with the reason, close it and exit with that one line.

        Outside an agent ``task.close()`` marks the task completed (``clearml/task.py``,
        ``Task.__shutdown``: ``mark_completed()`` unless an exception or signal ended it), so a
        refused run would show "Completed". Marked failed first, the completion that ``close``
        then asks for is refused by the server (failed -> completed is no allowed change:
        ``state_machine`` in clearml-server ``apiserver/bll/task/utils.py``; the SDK sends it
        with ``ignore_errors=True``). Under an agent the agent marks it failed again from the
        exit code. Offline the SDK sends nothing (``InterfaceBase._send`` returns None) and an
        import marks the session completed, so the session record keeps the reason instead.
        """
        print(message, file=sys.stderr)
        self.task.get_logger().report_text(message, print_console=False)  # printed above
        self.task.mark_failed(status_reason=message, status_message=message, force=True)
        self.close(failed=message)
        raise SystemExit(code)

    @property
    def logger(self) -> Any:
        return self.task.get_logger()

    def upload_artifact(self, name: str, artifact: Any, **kwargs: Any) -> str | None:
        """Files and dicts become task artifacts; offline they are copied into the session.

        Returns the uploaded artifact's URL (what another machine downloads); None offline or
        where the SDK reports none.
        """
        self.task.upload_artifact(
            name=name, artifact_object=artifact, wait_on_upload=True, **kwargs
        )
        if self.offline:  # a copy inside the session, not a URL another machine reads
            return None
        uploaded = (self.task.artifacts or {}).get(name)
        return getattr(uploaded, "url", None) or None

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

    def close(self, failed: str | None = None) -> Path | None:
        """Close the task; offline, return the session zip to import into a server later.

        ``failed``: the reason a refused run gives, kept in the offline session's record.
        """
        folder = self.session_folder()
        self.task.close()
        if folder is None:
            return None
        zipped = folder.parent / f"{folder.name}.zip"
        record = {
            "task": self.task.name,
            "project": self.task.get_project_name(),
            "zip": str(zipped),
            "status": "failed" if failed else "completed",
        }
        if failed:
            record["status_reason"] = failed
        with open(workspace() / "offline_sessions.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"ClearML offline session: {zipped}")
        return zipped


def options_as_text(options: Any) -> dict[str, str]:
    """The values as the web UI shows them, as text that ``from_mapping`` reads back."""
    return {name: value_as_text(value) for name, value in as_params(options).items()}


def connect_options(
    task: Any, options: T, section: str = OPTIONS_SECTION, fields: Sequence[str] | None = None
) -> T:
    """``task.connect`` the options under ``section``; the values the task holds, typed.

    Connected as text, the SDK's remote branch (an agent, a web-UI clone) hands back exactly
    what the task holds, and the options class alone types it. Connected typed, the SDK re-casts
    an edit by the default's type first: ``"abc"`` for a list option becomes ``list("abc")``
    (its characters), and ``"forty"`` or ``"32.0"`` for an int is replaced by the default with
    only a log warning, so the task would run with values nobody chose.

    ``fields``: only these are connected (the others keep ``options``' values), so the web UI
    shows no field that the code would not read. A parameter of ``section`` that names no
    connected option (a misspelt or a removed one, edited in the web UI) is an ``OptionError``:
    the SDK hands back only the keys it was given (``_Arguments.copy_to_dict``,
    clearml/backend_interface/task/args.py), so the edit would be dropped in silence.
    """
    text = options_as_text(options)
    if fields is not None:
        text = {name: text[name] for name in fields}
    connected = dict(task.connect(text, name=section))
    prefix = f"{section}/"
    unknown = sorted(
        key[len(prefix) :]
        for key in task.get_parameters()
        if key.startswith(prefix) and key[len(prefix) :] not in text
    )
    if unknown:
        raise OptionError(
            f"the task's {section} parameters name no option: {', '.join(unknown)} "
            f"(options: {', '.join(sorted(text))})"
        )
    return settle(type(options), options, **connected)


def report_from_a_thread(task_class: Any) -> None:
    """Offline, ClearML reports from a thread in the task's process, not from its subprocess.

    On Linux the SDK reports through a subprocess that wakes every 5 s (``Reporter``'s
    ``_flush_frequency``, clearml/backend_interface/metrics/reporter.py), and a task's flush
    and close each wait for it: about 9 s of every offline step, most of a short one. Offline
    the reports only go to files in the session folder, so a thread costs nothing. The switch
    is the class attribute that ``sdk.development.report_use_subprocess`` sets
    (``Task._report_subprocess_enabled``, clearml/backend_interface/task/task.py); with a
    server the SDK's own choice stands.
    """
    if not hasattr(task_class, "_report_subprocess_enabled"):
        raise RuntimeError("this clearml has no _report_subprocess_enabled: check the pin")
    task_class._report_subprocess_enabled = False


def forget_outputs(task: Any) -> None:
    """Delete the ``Outputs/*`` a web-UI clone or a reset copied from the run it came from: a
    run refused before it recorded its own showed that run's dataset id and counts as its own."""
    for key in [k for k in task.get_parameters() if k.startswith(f"{OUTPUT_SECTION}/")]:
        task.delete_parameter(key, force=True)


def init_task(
    project: str,
    name: str,
    options: Any,
    task_type: str = "data_processing",
    tags: list[str] | None = None,
    program: str | None = None,
) -> TaskContext:
    """``Task.init`` + ``task.connect`` of the typed options under ``Args``.

    Under an agent (or for a web-UI clone) ``connect`` returns the values stored on the task,
    as text where the UI edited them; they are typed again from the options class. A value that
    does not fit, or a required option left empty, ends the task here with one line (exit 2),
    after ClearML has the task, so the failure shows in the web UI. ``program`` begins that line
    (default: ``name``): a name made from the command line's options (``train cnn``) would name,
    under an agent, the defaults rather than the task's own values.
    """
    offline = prepare_environment()
    install_signal_handlers()
    from clearml import Task

    if offline:
        report_from_a_thread(Task)
    record_requirements_file()
    from clearml.backend_api.session.defs import MissingConfigError

    try:
        task = Task.init(
            project_name=project,
            task_name=name,
            task_type=getattr(Task.TaskTypes, task_type),
            tags=tags,
            reuse_last_task_id=False,
            auto_connect_arg_parser=False,
            auto_resource_monitoring=not offline,
            auto_connect_frameworks=FRAMEWORK_BINDINGS,
            output_uri=None if offline else output_uri(),
        )
    except MissingConfigError:  # the SDK's own text is a multi-line greeting and a traceback
        print(f"{program or name}: error: {not_configured()}", file=sys.stderr)
        raise SystemExit(2) from None
    arm_stop_deadline()
    forget_outputs(task)
    ctx = TaskContext(task=task, options=options, offline=offline)
    error = f"{program or name}: error:"
    try:
        ctx.options = connect_options(task, options)
    except OptionError as exc:
        ctx.fail(f"{error} {exc}")
    absent = missing(ctx.options)
    if absent:
        ctx.fail(
            f"{error} missing required option(s) {', '.join(absent)}: give them on the "
            f"command line or as {OPTIONS_SECTION}/<name> parameters of the task"
        )
    return ctx


Work = Callable[[TaskContext], Mapping[str, Any]]
# A full disk, a read-only or over-quota file system: the machine's state, not a bug to trace.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


@contextlib.contextmanager
def storage_errors_in_one_line(program: str, options: Any = None) -> Iterator[None]:
    """End ``program`` with one line naming the file and where to free space when storage
    fails: the workspace, or an output folder one of ``options`` (a ``written`` path) names."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        advice = _advice(exc.filename, _written_folders(options))
        print(f"{program}: error: cannot write{where}: {exc.strerror} {advice}", file=sys.stderr)
        raise SystemExit(2) from None


def _written_folders(options: Any) -> dict[str, Path]:
    """The output folders a task's options set (``--report-dir`` ...), by flag."""
    if options is None:
        return {}
    return {
        spec.flag: Path(getattr(options, spec.name)).resolve()
        for spec in specs(type(options))
        if spec.written and getattr(options, spec.name)
    }


def _advice(filename: Any, written: Mapping[str, Path]) -> str:
    """Where to free space: a full report folder outside the workspace had been blamed on the
    workspace, whose own disk had room."""
    ws = workspace()
    if filename:
        target = Path(os.fsdecode(filename)).resolve()
        for flag, folder in written.items():
            if target.is_relative_to(folder):
                return f"(the folder {flag} names): free space there or give {flag} another folder"
        if not target.is_relative_to(ws):
            return "(outside the workspace): free space on its file system"
    elif written:
        named = ", ".join(f"{flag} {folder}" for flag, folder in written.items())
        return f"(workspace {ws}, or {named}): free space there or point them elsewhere"
    return f"(workspace {ws}); free space there or point ASL_WORKSPACE at a writable folder"


def task_entry(
    options_cls: type[T],
    *,
    task_type: str,
    refused: tuple[type[BaseException], ...] = (),
    refusal_code: int = 2,
    name: Callable[[T], str] | None = None,
    fill_defaults: Callable[[T], None] | None = None,
) -> Callable[[Work], Callable[[list[str] | None], int]]:
    """Turn a task script's work function into its ``main(argv=None) -> int``.

    Every task lives the same way: parse the options (the script's docstring is the help),
    ``Task.init`` and connect them, run ``work(ctx)``, record the outputs it returns, close. One
    of the ``refused`` errors ends the task with the one line ``<script>: error: <reason>`` and
    ``refusal_code``, after ClearML has the task, so the reason shows in the web UI too.
    ``name`` names the ClearML task (default: the script's name); ``fill_defaults`` fills defaults
    that depend on the machine the task runs on, after ``connect``: the task records what was
    given (empty for "the default"), never a path of the machine that launched it, and an
    empty value a controller or the web UI stored still gets the default where it runs.
    """

    def wrap(work: Work) -> Callable[[list[str] | None], int]:
        script = Path(work.__globals__.get("__file__") or work.__module__).stem
        doc = work.__globals__.get("__doc__")

        def main(argv: list[str] | None = None) -> int:
            options = parse(options_cls, argv, doc)
            with storage_errors_in_one_line(script, options):
                task_name = name(options) if name else script
                ctx = init_task("ASL", task_name, options, task_type, program=script)
                try:
                    if fill_defaults is not None:
                        fill_defaults(ctx.options)
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

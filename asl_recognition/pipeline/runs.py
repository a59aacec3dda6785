"""Pipeline run folders: their ids, state files and locks, and which run a command (re)starts.

Run state lives in ``<workspace>/pipeline_runs/<run_id>/state.json``. A run in progress is locked
(``<run_id>/run.lock``, an flock that dies with its holders): the runner holds it and hands it to
the running step, so neither a second command nor a resume can join a run while its runner or a
step of it is alive.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from asl_recognition.data.sources import default_raw_sources
from asl_recognition.locks import FileLock, holder
from asl_recognition.options import specs
from asl_recognition.paths import workspace
from asl_recognition.pipeline.dag import Dag
from asl_recognition.pipeline.options import PipelineRunOptions

STATE_NAME = "state.json"
LOCK_NAME = "run.lock"
RUN_ID_PATTERN = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")  # what new_run_id makes
RUN_CHOOSERS = ("run_id", "resume", "new_run")  # each picks the run a command executes
RAW_SOURCE = "validate_raw/source"


class RunUnavailable(LookupError):
    """This run cannot be (re)started: a malformed id, or it is in progress elsewhere."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def runs_dir() -> Path:
    return workspace() / "pipeline_runs"


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def check_run_id(run_id: str) -> str:
    """Refuse an id that is not one :func:`new_run_id` makes: it names a folder under the runs."""
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise RunUnavailable(
            f"--run-id {run_id!r} is not a run id (YYYYMMDD-HHMMSS-xxxxxx, as --list-runs shows)"
        )
    return run_id


def run_options_conflict(run: PipelineRunOptions, overrides: Sequence[str]) -> str | None:
    """Why these run options contradict each other (None when they do not).

    :func:`choose_run` honours one of --run-id, --resume and --new-run, and --list-runs runs
    nothing: any other option would be dropped in silence, so the command is refused instead.
    """
    flag = {spec.name: spec.flag for spec in specs(PipelineRunOptions)}
    if run.list_runs:
        default = PipelineRunOptions()
        extra = [
            flag[f.name] if getattr(run, f.name) is not False else f"--no-{flag[f.name][2:]}"
            for f in fields(run)
            if f.name not in ("list_runs", "mode")
            and getattr(run, f.name) != getattr(default, f.name)
        ]
        if run.mode not in ("auto", "local-executor"):
            extra.insert(0, f"{flag['mode']} {run.mode}")
        if extra or overrides:
            taken = ", ".join([*extra, *overrides])
            return f"{flag['list_runs']} only lists this machine's runs: it takes no {taken}"
    chosen = [flag[name] for name in RUN_CHOOSERS if getattr(run, name)]
    if len(chosen) > 1:
        return f"{' and '.join(chosen)} each choose the run to execute: pass only one of them"
    return None


LOCAL_EXECUTOR_ONLY = ("run_id", "resume", "new_run", "from_step", "list_runs")


def mode_conflict(run: PipelineRunOptions, mode: str) -> str | None:
    """Why the local executor's run options cannot go with the chosen ClearML mode (they
    were dropped in silence), or None."""
    if mode == "local-executor":
        return None
    flag = {spec.name: spec.flag for spec in specs(PipelineRunOptions)}
    given = [flag[name] for name in LOCAL_EXECUTOR_ONLY if getattr(run, name)]
    if not given:
        return None
    return f"{', '.join(given)} choose a local executor run: not in --mode {mode}"


def with_raw_source(dag: Dag, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with validate_raw's source as its step resolves an empty one: ``$ASL_RAW``,
    else the sample.

    In the parameters, another ``$ASL_RAW`` makes another run: left empty, a command with other
    data resumed an unfinished run and reused the data that run had validated.
    """
    if RAW_SOURCE not in dag.param_defaults() or values.get(RAW_SOURCE):
        return dict(values)
    step = dag.step(RAW_SOURCE.split("/")[0])
    if step.skip_reason({**dag.param_defaults(), **values}):  # given raw_version: not read
        return dict(values)
    return {**values, RAW_SOURCE: default_raw_sources()}


def claim_run(run_dir: Path) -> FileLock | None:
    """The run's lock, taken now; None while another runner or a step of the run holds it."""
    lock = FileLock(run_dir / LOCK_NAME)
    return lock if lock.acquire(timeout=0) else None


def in_progress(run_dir: Path) -> RunUnavailable:
    """The one-line refusal for a locked run: who holds it, and what to do instead."""
    state = read_json(run_dir / STATE_NAME, {}) or {}
    running = [n for n, s in state.get("steps", {}).items() if s.get("status") == "running"]
    doing = f"step {running[0]} running, " if running else ""
    pid = holder(run_dir / LOCK_NAME)
    return RunUnavailable(
        f"run {run_dir.name} is in progress ({doing}started by pid {pid}); "
        "wait for it to end, or pass --new-run to start another run beside it"
    )


def write_json(path: Path, data: Any) -> None:
    """Write via a temporary file so an interrupted run never leaves half a state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return default


def list_runs(root: Path | None = None) -> list[dict[str, Any]]:
    """Every run's state, oldest first."""
    root = root or runs_dir()
    states = [read_json(p) for p in sorted(root.glob(f"*/{STATE_NAME}"))]
    states = [s for s in states if isinstance(s, dict) and "run_id" in s]
    return sorted(states, key=lambda s: (s.get("created", ""), s["run_id"]))


def step_path(state: Mapping[str, Any], step: str, output: str) -> Path | None:
    """A path output of ``step`` in ``state``, in this workspace: a run recorded before its
    workspace was moved or copied names the folders it wrote by their old place (a copied
    workspace's demo served the other workspace's repository), so a path inside the workspace
    the run was recorded in (its step log's, ``<workspace>/pipeline_runs/<run>/<step>``) is
    moved under this one. None when the step recorded no such output."""
    recorded = (state.get("steps") or {}).get(step) or {}
    value = (recorded.get("outputs") or {}).get(output)
    if not value:
        return None
    path, log = Path(value), recorded.get("log")
    here = runs_dir().parent
    if log and os.path.isabs(log) and len(Path(log).parents) > 2:
        then = Path(log).parents[2]
        if then != here and path.is_relative_to(then):
            return here / path.relative_to(then)
    return path


def normalise(params: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(params), default=str))


class RunChoice(NamedTuple):
    """The run a command executes, with its lock already held (pass it to the executor)."""

    run_id: str
    params: dict[str, Any]
    resuming: bool
    lock: FileLock


def choose_run(
    dag: Dag,
    params: Mapping[str, Any],
    run_id: str | None = None,
    resume: bool = False,
    new: bool = False,
    root: Path | None = None,
) -> RunChoice:
    """Pick and lock the run to (continue to) execute.

    ``run_id`` given: that run (created if new; an existing run keeps its own parameters).
    Otherwise the latest unfinished run is resumed when its parameters equal ``params`` (or
    always with ``resume``); ``new`` forces a fresh run. A run that is locked (its runner or one
    of its steps is alive) is never joined: :class:`RunUnavailable` says so in one line.
    """
    root = root or runs_dir()
    if run_id:
        lock = claim_run(root / check_run_id(run_id))
        if lock is None:
            raise in_progress(root / run_id)
        state = read_json(root / run_id / STATE_NAME)
        if state:
            return RunChoice(run_id, state["params"], True, lock)
        return RunChoice(run_id, dict(params), False, lock)
    if not new:
        choice = _resume_unfinished(dag, params, resume, root)
        if choice is not None:
            return choice
    run_id = new_run_id()
    lock = claim_run(root / run_id)
    assert lock is not None, "a new run id is unique"
    return RunChoice(run_id, dict(params), False, lock)


def _resume_unfinished(
    dag: Dag, params: Mapping[str, Any], resume: bool, root: Path
) -> RunChoice | None:
    """The latest unfinished run to resume, locked; None when there is none."""
    candidates = [
        s
        for s in reversed(list_runs(root))
        if s.get("dag") == dag.name
        and s.get("status") != "completed"
        and (resume or s.get("params") == normalise(params))
    ]
    for state in candidates:
        run_dir = root / state["run_id"]
        lock = claim_run(run_dir)
        if lock is None:
            raise in_progress(run_dir)
        state = read_json(run_dir / STATE_NAME, {})  # as its last runner left it
        if state.get("status") != "completed":
            return RunChoice(state["run_id"], state["params"], True, lock)
        lock.release()  # it ended while we looked: look further
    if resume:
        raise LookupError(f"no unfinished {dag.name} run to resume under {root}")
    return None

"""Run the pipeline DAG on this machine with no ClearML server.

Each step is its own process (``python tasks/<step>.py --options``, cwd = repo root), exactly as a
ClearML agent would run it, so each gets its own offline ClearML session and no step can leak
state into another (one ``Task.init`` per process). Steps pass ids through
``$ASL_STEP_OUTPUTS`` JSON files, which ``TaskContext.record_outputs`` writes.

Re-running the same run skips completed steps and starts again at the failed one
(:mod:`~asl_recognition.pipeline.runs` keeps the state and the lock); steps marked ``cache`` are
also reused across runs (:mod:`~asl_recognition.pipeline.step_cache`). Steps die with the runner,
even on ``kill -9`` (:mod:`asl_recognition.reaper`).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from asl_recognition.child_output import Output
from asl_recognition.clearml_env import child_env
from asl_recognition.locks import FileLock
from asl_recognition.options import specs, to_argv
from asl_recognition.paths import REPO_ROOT, workspace
from asl_recognition.pipeline.dag import (
    Dag,
    Step,
    UnresolvedReference,
    filled_value,
    references,
)
from asl_recognition.pipeline.runs import (
    STATE_NAME,
    check_run_id,
    claim_run,
    in_progress,
    new_run_id,
    normalise,
    now,
    read_json,
    runs_dir,
    write_json,
)
from asl_recognition.pipeline.step_cache import StepCache, pinned_references
from asl_recognition.processes import Child, describe_exit
from asl_recognition.tracking import OUTPUTS_ENV

# a progress bar's redraw (tqdm: "42%|####  | 21/50 [00:03<00:04, 6.1batch/s]")
PROGRESS_BAR = re.compile(r"\d+%\||(?:[\d.]+|\?)\s*(?:\w+/s|s/\w+)\]\s*$")
DONE = ("completed", "cached", "skipped")
TAIL_LINES = 25
STOP_GRACE_S = 10


class StepFailed(RuntimeError):
    """A step exited non-zero (or recorded no output a later step needs)."""

    def __init__(self, step: str, returncode: int, error: str, tail: str, log_dir: Path):
        self.step, self.returncode, self.error, self.tail = step, returncode, error, tail
        self.log_dir = log_dir
        super().__init__(f"step {step!r} failed (exit code {returncode}): {error}")


def step_argv(step: Step, args: Mapping[str, Any]) -> list[str]:
    """The step's command line: wired values and every value that differs from its default."""
    defaults = {spec.name: spec.default for spec in specs(step.options)}
    given = {k: v for k, v in args.items() if k in step.wired or v != defaults[k]}
    return to_argv(step.options, given)


def _last_error_line(text: str, returncode: int = 1) -> str:
    """The step's own one-line reason: its last stderr line that is not a progress bar nor a
    ClearML notice. A bar redraws itself with ``\\r``, so of such a line only its last drawing
    counts, and it is skipped when it looks like one (tqdm's ``[..., 6.1batch/s]``). A step
    ended by a signal says which, with its last words."""
    said = ""
    for line in reversed(text.split("\n")):
        drawn = [part.strip() for part in line.split("\r") if part.strip()]
        last = drawn[-1] if drawn else ""
        if last and not PROGRESS_BAR.search(last) and not last.startswith("ClearML"):
            said = last
            break
    if returncode < 0:
        return f"killed by {describe_exit(returncode)}" + (f" after: {said}" if said else "")
    return said or "no error message on stderr"


class RunFromOtherCode(ValueError):
    """A recorded run whose parameters are not this code's (an older or newer checkout)."""


class LocalExecutor:
    """Runs ``dag`` step by step as subprocesses, persisting state for resume.

    ``lock``: the run's lock from :func:`choose_run`; without one, :meth:`run` takes it (and
    refuses a run in progress). It is released when :meth:`run` ends.
    """

    def __init__(
        self,
        dag: Dag,
        params: Mapping[str, Any],
        run_id: str | None = None,
        root: Path | None = None,
        repo_root: Path = REPO_ROOT,
        python: str = sys.executable,
        use_cache: bool = True,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        env: Mapping[str, str] | None = None,
        lock: FileLock | None = None,
    ):
        self.dag = dag
        self.root = Path(root or runs_dir())
        self.run_id = check_run_id(run_id) if run_id else new_run_id()
        self.lock = lock
        self.run_dir = self.root / self.run_id
        self.repo_root = Path(repo_root)
        self.python = python
        self.use_cache = use_cache
        self.out = out or sys.stdout
        self.cache = StepCache(self.root, self.repo_root, out=self.out)
        self.err = err or sys.stderr
        self.extra_env = dict(env or {})
        known = {p.name for p in dag.params}
        recorded = (read_json(self.state_path) or {}).get("params")
        if recorded is not None and set(recorded) != known:
            raise RunFromOtherCode(
                f"run {self.run_id} was recorded by other code (parameters "
                f"{', '.join(sorted(set(recorded) ^ known))} differ), so it cannot go on as it "
                "ran: start a new run (--new-run)"
            )
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"unknown pipeline parameters: {', '.join(sorted(unknown))}")
        self.params = {**dag.param_defaults(), **dict(params)}
        self.fresh: set[str] = set()  # steps --from-step runs again
        self.state = self._load_state()

    # ----- state ---------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_NAME

    def _load_state(self) -> dict[str, Any]:
        state = read_json(self.state_path)
        if state:
            self.params = state["params"]
            for name in self.dag.step_names():
                state["steps"].setdefault(name, {"status": "pending"})
            return state
        return {
            "run_id": self.run_id,
            "dag": self.dag.name,
            "created": now(),
            "updated": now(),
            "status": "pending",
            "params": normalise(self.params),
            "steps": {name: {"status": "pending"} for name in self.dag.step_names()},
        }

    def _save(self) -> None:
        self.state["updated"] = now()
        write_json(self.state_path, self.state)

    def _print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # ----- running -------------------------------------------------------------------------
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {
            name: info.get("outputs", {})
            for name, info in self.state["steps"].items()
            if info.get("status") in DONE
        }

    def _required_outputs(self, step: Step) -> set[str]:
        """Outputs of ``step`` that later steps reference: missing ones fail the step."""
        needed = set()
        for other in self.dag.steps:
            for value in other.args.values():
                for scope, key in references(value):
                    if scope == step.name:
                        needed.add(key)
        return needed

    def run(self, from_step: str | None = None) -> dict[str, Any]:
        """Run (or resume) every step; raise :class:`StepFailed` with the step's own error, or
        :class:`RunUnavailable` when another process holds the run."""
        if self.lock is None:
            self.lock = claim_run(self.run_dir)
            if self.lock is None:
                raise in_progress(self.run_dir)
            self.state = self._load_state()  # as the last holder left it
        try:
            return self._run_locked(from_step)
        finally:
            self.lock.release()
            self.lock = None

    def _run_locked(self, from_step: str | None) -> dict[str, Any]:
        if from_step:  # asked to run again: neither reused nor taken from the cache
            self.fresh = set(self.dag.descendants(self.dag.step(from_step).name))
            for name in self.fresh:
                self.state["steps"][name] = {"status": "pending"}
        resumed = any(s.get("status") in DONE for s in self.state["steps"].values())
        self.state["status"] = "running"
        self._save()
        total = len(self.dag.steps)
        self._print(
            f"Pipeline {self.dag.name} run {self.run_id}"
            + (" (resuming)" if resumed else "")
            + f": {total} steps, state {self.state_path}"
        )
        started = time.monotonic()
        for index, step in enumerate(self.dag.steps, 1):
            try:
                self._run_step(step, index, total)
            except StepFailed:
                self.state["status"] = "failed"
                self._save()
                raise
        self.state["status"] = "completed"
        self.state["duration_s"] = round(time.monotonic() - started, 1)
        self._save()
        self._print(self.summary())
        return self.state

    def _run_step(self, step: Step, index: int, total: int) -> None:
        """Reuse, skip, take from the cache, or run one step; record what happened."""
        info = self.state["steps"][step.name]
        header = f"==> [{index}/{total}] {step.name}"
        if self._reused_or_skipped(step, info, header):
            return
        try:
            args = {k: filled_value(v, self.params, self.outputs()) for k, v in step.args.items()}
        except UnresolvedReference as exc:
            raise StepFailed(step.name, -1, str(exc.args[0]), "", self.run_dir / step.name)
        argv = step_argv(step, args)
        info["inputs"] = self.cache.inputs(read := self.cache.read(step, args))  # for a resume
        key = self.cache.key(step, argv, read) if step.cache else ""
        fresh = step.name in self.fresh or not self.use_cache
        if step.cache and not fresh and self._cached(key, info, argv, header):
            return
        outputs, duration = self._execute(step, info, argv, f"[{index}/{total}] {step.name}")
        if step.cache:
            self.cache.store(key, step, self.run_id, outputs)
        self._print(
            f"<== [{index}/{total}] {step.name} done in {duration:.0f} s "
            + self._format_outputs(outputs)
        )

    def _reused_or_skipped(self, step: Step, info: dict[str, Any], header: str) -> bool:
        """Done earlier in this run (a resume), or skipped by the recipe (a given raw_version).

        A step marked ``rerun_on_resume`` is run again instead: its answer may be stale."""
        if info.get("status") in DONE and step.rerun_on_resume and info["status"] != "skipped":
            self._print(f"{header}: run again (it reads the registry's current state)")
        elif info.get("status") in DONE:
            gone = self.cache.resume_blocker(step, info, self.params, self.outputs())
            if not gone:
                how = "cached" if info["status"] == "cached" else info["status"]
                self._print(f"{header}: reused ({how} in this run at {info.get('ended', '?')})")
                return True
            self._print(f"{header}: run again, with the steps after it ({gone})")
            for name in self.dag.descendants(step.name):
                self.state["steps"][name].clear()  # in place: ``info`` is this step's
                self.state["steps"][name]["status"] = "pending"
        reason = step.skip_reason(self.params)
        if not reason:
            return False
        outputs = {k: filled_value(v, self.params, {}) for k, v in step.skip_outputs.items()}
        try:  # "latest" read now, as an id: kept as text it keyed the next steps' cache
            raw = self.params.get("publish_dataset/raw_name") or "ASL_raw"
            outputs = pinned_references(outputs, {"raw_dataset_id": raw})
        except LookupError as exc:
            raise StepFailed(step.name, -1, str(exc), "", self.run_dir / step.name)
        info.update(status="skipped", outputs=outputs, ended=now())
        self._save()
        self._print(f"{header}: skipped ({reason})")
        return True

    def _cached(self, key: str, info: dict[str, Any], argv: list[str], header: str) -> bool:
        """Outputs of an earlier run with the same script digest and arguments, when valid."""
        hit = self.cache.lookup(key)
        if not hit:
            return False
        info.update(
            status="cached",
            argv=argv,
            outputs=hit["outputs"],
            cached_from=hit["run_id"],
            ended=now(),
        )
        self._save()
        self._print(
            f"{header}: cached (same script and arguments as run {hit['run_id']}) "
            + self._format_outputs(hit["outputs"])
        )
        return True

    def _execute(
        self, step: Step, info: dict[str, Any], argv: list[str], label: str
    ) -> tuple[dict[str, Any], float]:
        """Run the step's script as a child; its outputs, or StepFailed with the error line."""
        command = [self.python, step.script, *argv]
        self._print(f"==> {label}: {' '.join(command[1:])}")
        step_dir = self.run_dir / step.name
        step_dir.mkdir(parents=True, exist_ok=True)
        outputs_file = step_dir / "outputs.json"
        outputs_file.unlink(missing_ok=True)
        attempts, inputs = info.get("attempts", 0) + 1, info.get("inputs")
        info.clear()
        info.update(
            status="running", attempts=attempts, argv=argv, started=now(), log=str(step_dir)
        )
        self._save()
        returncode, stderr_tail = self._spawn(command, step, outputs_file, step_dir)
        info.update(ended=now(), returncode=returncode)
        started, ended = (datetime.fromisoformat(info[k]) for k in ("started", "ended"))
        info["duration_s"] = duration = (ended - started).total_seconds()
        if returncode != 0:
            error = _last_error_line(stderr_tail, returncode)
            tail = "\n".join(stderr_tail.replace("\r", "\n").splitlines()[-TAIL_LINES:])
            info.update(status="failed", error=error, stderr_tail=tail)
            self._save()
            self._print(f"<== {label} FAILED (exit code {returncode})")
            raise StepFailed(step.name, returncode, error, tail, step_dir)
        outputs = read_json(outputs_file, {})
        missing = sorted(self._required_outputs(step) - set(outputs))
        if missing:
            error = f"exited 0 but recorded no output {', '.join(missing)} in {outputs_file}"
            info.update(status="failed", error=error)
            self._save()
            raise StepFailed(step.name, 0, error, "", step_dir)
        info.update(status="completed", outputs=outputs, inputs=inputs)
        self._save()
        return outputs, duration

    def _spawn(
        self, command: list[str], step: Step, outputs_file: Path, step_dir: Path
    ) -> tuple[int, str]:
        env = child_env()  # a step starts its own task: never the one of this shell's id
        env.update(self.extra_env)
        env.update(
            {
                OUTPUTS_ENV: str(outputs_file),
                "ASL_WORKSPACE": str(workspace()),
                "ASL_PIPELINE_RUN_ID": self.run_id,
                "ASL_PIPELINE_STEP": step.name,
                "PYTHONUNBUFFERED": "1",
            }
        )
        step_child = Child(
            command,
            Output(step_dir / "stdout.log", self.out),
            Output(step_dir / "stderr.log", self.err),
            name=step.name,
            env=env,
            cwd=self.repo_root,
            grace=STOP_GRACE_S,
            die_with_parent=True,  # a kill -9 of this runner takes the step's tree with it
            pass_fds=(self.lock.fileno(),) if self.lock else (),  # the run stays locked meanwhile
        ).start()
        try:
            returncode = step_child.wait()
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM via install_signal_handlers
            self._interrupt(step_child, step)
            raise
        return returncode, step_child.last_output()

    def _interrupt(self, step_child: Child, step: Step) -> None:
        """Stop the running step (SIGTERM to its process group, SIGKILL after the grace) and
        record it as interrupted."""
        step_child.stop()
        self.state["steps"][step.name].update(status="interrupted", ended=now())
        self.state["status"] = "interrupted"
        self._save()
        self._print(f"<== {step.name} interrupted; re-run the same command to resume")

    @staticmethod
    def _format_outputs(outputs: Mapping[str, Any]) -> str:
        shown = ", ".join(
            f"{k}={v}" for k, v in outputs.items() if not isinstance(v, (dict, list))
        )
        return f"[{shown}]" if shown else ""

    def summary(self) -> str:
        lines = [f"Pipeline run {self.run_id}: {self.state['status']}"]
        for name in self.dag.step_names():
            info = self.state["steps"][name]
            took = f"{info['duration_s']:.0f} s" if "duration_s" in info else "-"
            lines.append(f"  {name:<18} {info.get('status', 'pending'):<10} {took:>6}")
        lines.append(f"  state: {self.state_path}")
        return "\n".join(lines)

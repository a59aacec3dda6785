"""Project scripts and CLIs run as real child processes, as an agent or ``make run`` runs them.

``cli_process`` is a long-running ``python -m module`` a test talks to (never leaked);
``run_script`` a task script run to its end."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from asl_recognition.paths import REPO_ROOT


@contextmanager
def cli_process(
    module: str,
    *args: str | Path | int,
    env: Mapping[str, str] | None = None,
    stderr: int = subprocess.PIPE,
) -> Iterator[subprocess.Popen]:
    """``python -m module args`` from the repo root with text pipes (``stderr=STDOUT`` merges
    them); killed and reaped on the way out if the test left it running."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *(str(arg) for arg in args)],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def lines_read(stream) -> tuple[list[str], threading.Thread]:
    """Every line ``stream`` gives, appended as it comes by a thread that ends at its end."""
    lines: list[str] = []

    def read() -> None:
        for line in stream:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def wait_for_text(lines: list[str], text: str, timeout: float) -> bool:
    """Whether ``text`` appears in ``lines`` (filled by :func:`lines_read`) within ``timeout``.

    A supervisor logs "ready again" only at its next readiness poll, a moment after the server
    already answers: a test that stops it on the first good answer may cut that wait short."""
    deadline = time.monotonic() + timeout
    while text not in "".join(lines):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def run_script(
    *argv: str | os.PathLike, env: Mapping[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``python ARGV...`` from the repository root, as an agent runs a task; output as text."""
    return subprocess.run(
        [sys.executable, *map(str, argv)],
        cwd=REPO_ROOT,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# `make run`'s pipeline command (after the interpreter), run from the repository root.
RUN_PIPELINE = [
    "pipelines/asl_pipeline.py",
    "--mode",
    "local-executor",
    "--config",
    "configs/run.yaml",
]


def recipe_steps(recipe: str = "configs/run.yaml") -> list[str]:
    """The steps a recipe's pipeline runs, in order (read from the DAG and the recipe)."""
    from asl_recognition.paths import REPO_ROOT
    from asl_recognition.pipeline.clearml_controller import active_steps
    from asl_recognition.pipeline.dag import ASL_DAG
    from asl_recognition.pipeline.recipe import load_recipe

    values = {**ASL_DAG.param_defaults(), **load_recipe(ASL_DAG, REPO_ROOT / recipe)}
    return [step.name for step in active_steps(ASL_DAG, values)]


@contextmanager
def lock_held_elsewhere(path: Path) -> Iterator[subprocess.Popen]:
    """``path``'s flock held by another live process (a run of another pid namespace, or
    another run): yields that process once it holds the lock; killed on exit."""
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import time; from asl_recognition.locks import FileLock; "
            f"assert FileLock({str(path)!r}).acquire(); print('held', flush=True); "
            "time.sleep(120)"
        )],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def child_pids(pid: int, live_only: bool = False) -> list[int]:
    """Direct children of ``pid`` from /proc (Linux); without zombies when ``live_only``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and not (live_only and fields[0] in ("Z", "X")):
            found.append(int(stat.parent.name))
    return found


def processes_of(repo: Path) -> list[int]:
    """Pids of every process whose command line names ``repo`` (tritonserver, its stubs)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(repo).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def left_after(repo: Path, timeout: float = 30.0) -> list[int]:
    """Pids still naming ``repo`` once they had ``timeout`` s to go (empty: all gone)."""
    deadline = time.monotonic() + timeout
    while processes_of(repo) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes_of(repo)

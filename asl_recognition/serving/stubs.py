"""Python-backend stubs that died under a live tritonserver, and the Docker health check for them.

Triton 2.51's Python backend neither restarts nor reaps a stub that was killed (the OOM killer,
``kill -9``, a crash in a model's native code): the stub stays a zombie child of tritonserver,
every request to its model gets 500 ("Stub process '<model>_0_0' is not healthy"), and yet
``/v2/health/ready`` and the model's own ready endpoint still answer 200. A stub the backend stops
itself (a model unloaded, or replaced by a new version in poll mode) is reaped at once. So a stub
zombie that outlives a short grace period is a dead model instance, and only a restart of the
server brings it back: the launcher restarts it (:meth:`.TritonServer.running`), and in Docker
the health check below stops the server so that the restart policy starts a new one.

The same check stops a server whose model repository changed since its last build
(:func:`.repo_manifest.changed_repository`): in poll mode Triton would load the changed file.

A process reparented to tritonserver as PID 1 (an orphaned grandchild that a model forked) would
also become its zombie: the container runs with an init (compose ``init: true``, ``docker run
--init``) that adopts orphans instead, so only tritonserver's own stubs are its children.

The standard library and :mod:`asl_recognition.options` only, on Python 3.10 (the Triton image's
interpreter): the health check runs this module inside the server image.

CLI (the server image's health check, from the folder that holds the package)::

    python3 -m asl_recognition.serving.stubs [--stop-server] [--grace 2] [--server-pid PID]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import option, parse
from asl_recognition.serving import repo_manifest

PROC = Path("/proc")
STUB_BINARY = "triton_python_backend_stub"
STUB_COMM = STUB_BINARY[:15]  # the kernel keeps 15 characters of a name, also for a zombie
GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/<pid>/stat`` says of a process that this module and :mod:`.leftovers` read."""

    name: str
    state: str  # "Z": a zombie, dead and not reaped
    parent: int
    start_ticks: int  # clock ticks after boot


def proc_stat(pid: int | str) -> ProcStat | None:
    """``/proc/<pid>/stat``, parsed; None once the process is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    return ProcStat(
        text[text.index("(") + 1 : text.rindex(")")], fields[0], int(fields[1]), int(fields[19])
    )


def _model_of(pid: int) -> str:
    """``<model>/<version>`` from a live stub's command line (its model file's path)."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    if len(argv) < 2 or not argv[0].endswith(STUB_BINARY.encode()):
        return ""
    parts = Path(os.fsdecode(argv[1])).parts
    return "/".join(parts[-3:-1]) if len(parts) >= 3 else ""


def stub_children(server_pid: int) -> tuple[dict[int, str], set[int]]:
    """The server's live stubs (pid: model) and its stub zombies (pids)."""
    live: dict[int, str] = {}
    dead: set[int] = set()
    for entry in PROC.glob("[0-9]*"):
        stat = proc_stat(entry.name)
        if stat is None or stat.parent != server_pid or stat.name != STUB_COMM:
            continue
        if stat.state == "Z":
            dead.add(int(entry.name))
        else:
            live[int(entry.name)] = _model_of(int(entry.name))
    return live, dead


class StubWatch:
    """Names the models whose stubs died and stayed unreaped for ``grace`` seconds.

    It remembers each live stub's model, since a zombie's command line is empty."""

    def __init__(
        self, grace: float = GRACE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.grace, self.clock = grace, clock
        self.models: dict[int, str] = {}
        self.first_seen: dict[int, float] = {}

    def dead_models(self, server_pid: int) -> list[str]:
        """Models (``name/version``) with a stub dead past grace; ``stub pid N`` where this watch
        never saw the stub alive (a zombie's command line is empty)."""
        live, dead = stub_children(server_pid)
        # a pid of a stub that is gone altogether may come back as another stub's
        self.models = {pid: m for pid, m in self.models.items() if pid in dead} | live
        now = self.clock()
        self.first_seen = {pid: self.first_seen.get(pid, now) for pid in dead}
        return sorted(
            self.models.get(pid) or f"stub pid {pid}"
            for pid, since in self.first_seen.items()
            if now - since >= self.grace
        )


def servers() -> list[int]:
    """The pids of every tritonserver this user can see (one, in a container)."""
    return sorted(
        int(entry.name)
        for entry in PROC.glob("[0-9]*")
        if (stat := proc_stat(entry.name)) is not None and stat.name == "tritonserver"
    )


DESCRIPTION = (
    "Exit 1 when a tritonserver here has a dead Python-backend stub, or serves a repository "
    "changed since its last build (the server image's health check); with --stop-server, also "
    "SIGTERM that server, so that its restart policy starts a new one."
)


@dataclass(frozen=True)
class StubCheckOptions:
    """The health check's command line."""

    stop_server: bool = option(
        False,
        "SIGTERM a server with a dead stub or a changed repository (Docker's restart policy "
        "starts a new one)",
    )
    grace: float = option(GRACE_SECONDS, "seconds a stub zombie may last unreaped", low=0.1)
    server_pid: int = option(0, "the tritonserver to check (0: every one this user sees)", low=0)


def check(options: StubCheckOptions) -> int:
    """0 when no server has a dead stub or a changed repository (:mod:`.repo_manifest`); else 1,
    after SIGTERM to it with ``stop_server``."""
    pids = [options.server_pid] if options.server_pid else servers()
    watches = {pid: StubWatch(options.grace) for pid in pids}
    for pid, watch in watches.items():
        watch.dead_models(pid)  # the first sight of each zombie
    if any(watch.first_seen for watch in watches.values()):
        time.sleep(options.grace)  # a zombie seen again after the grace was not being reaped
    broken = {}
    for pid, watch in watches.items():
        models = watch.dead_models(pid)
        if models:
            broken[pid] = (
                f"a Python backend stub died ({', '.join(models)}), and Triton does not restart "
                "it (every request to its model fails)"
            )
        elif why := repo_manifest.changed_repository(pid):
            broken[pid] = why
    for pid, why in broken.items():
        action = "; stopping it so that it is restarted" if options.stop_server else ""
        print(f"tritonserver {pid}: {why}{action}", file=sys.stderr)
        if options.stop_server:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, signal.SIGTERM)
    return 1 if broken else 0


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`StubCheckOptions` (also for the README table)."""
    return build_options_parser(StubCheckOptions, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return check(parse(StubCheckOptions, argv, DESCRIPTION))


if __name__ == "__main__":
    sys.exit(main())

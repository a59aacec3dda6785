"""The serving command line (``make serve``): the real tritonserver behind the front, supervised.

CLI::

    python -m asl_recognition.serving.launcher --repo workspace/triton_repo [--http-port 8000]

The server process itself (binary, backends, shared memory) is
:class:`.triton_server.TritonServer`. The CLI supervises it: Triton 2.51 can be killed by a single
bad HTTP request (a deeply nested JSON body overflows the parser's stack: SIGSEGV) and has no
option to cap request sizes or JSON depth, so a server that dies is restarted with exponential
backoff, a bounded number of times in a row, each restart logged. A server one of whose
Python-backend stubs died counts as dead (Triton keeps that model "ready" while every request to
it fails; :mod:`.stubs`).

Triton's HTTP and gRPC listen on loopback only; the public HTTP port (``--host``,
``--http-port``) is the front (:mod:`.front`: body cap, per-client rate, bounded time). gRPC is
not published: tritonserver 2.51 has no flag for its gRPC message size (``tritonserver --help``
lists none; its gRPC server is built with a 2 GiB maximum), so only local clients reach it. On
both, Triton's admin protocols (shared memory, trace, logging) need ``ASL_TRITON_ADMIN_KEY``
(:mod:`.admin_api`; unset, they are closed).

A repository that changes outside a build (:mod:`.repo_manifest`: a file differs from what the
last build recorded) is not served: the server does not start on it, and a running one is
stopped within about half a second, the front answering 503 with the file's name until a
build (or ``repo_manifest accept``) records the repository again; then it is served.

Every restart first stops the dead server, which removes the shared memory it left. Once the
restarts run out the launcher keeps the front up, answering 503 with the reason, and exports
``asl_server_gave_up 1`` on the front's ``/metrics`` (the ``AslServerGaveUp`` alert, the status
page) until it is stopped.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from asl_recognition import processes
from asl_recognition.netutil import free_port
from asl_recognition.options import OptionError, add_options
from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import from_mapping, missing, option, specs
from asl_recognition.paths import workspace
from asl_recognition.serving.front import FrontLimits, FrontServer, ServerState, create_app
from asl_recognition.serving.repo_manifest import RepositoryGuard, trusted
from asl_recognition.serving.triton_server import TritonServer, TritonServerError
from asl_recognition.stop_signals import stop_on_signals
from asl_recognition.supervision import RestartPolicy
from asl_recognition.supervision import supervise as supervise_service

LOG = logging.getLogger(__name__)
T = TypeVar("T")


def supervise(
    server: TritonServer,
    should_stop: Callable[[], bool],
    policy: RestartPolicy | None = None,
    ready_timeout: float = 120.0,
) -> int:
    """Keep a started, ready server running until ``should_stop()``; 1 once restarts run out."""
    return supervise_service(
        server, should_stop, policy or RestartPolicy(), ready_timeout, "tritonserver", LOG
    )


DESCRIPTION = (
    "Run the real tritonserver (requirements-serving.txt) on a model repository, "
    "behind the front (body cap, per-client rate, bounded time) on the public HTTP port."
)


@dataclass(frozen=True)
class LauncherOptions:
    """The launcher's command line (``make serve``); the front's limits: :class:`FrontLimits`."""

    repo: str = option("", "model repository (tasks/build_triton_repo.py)", required=True)
    host: str = option("127.0.0.1", "address of the front (loopback)")
    http_port: int = option(8000, "HTTP/REST port (the front)", low=0, high=65535)
    grpc_port: int = option(8001, "gRPC port, on 127.0.0.1 only (no size cap)", low=0, high=65535)
    metrics_port: int = option(8002, "Prometheus metrics port", low=0, high=65535)
    metrics_host: str = option(
        "127.0.0.1",
        "address of Triton's own metrics port, apart from --host: it has no front (any body is "
        "taken whole, an idle connection is never closed); widen it only for a trusted network",
    )
    triton_http_port: int = option(
        0,
        "Triton's own HTTP port on 127.0.0.1, behind the front (0: a free port)",
        low=0,
        high=65535,
    )
    model_control_mode: str = option(
        "poll",
        "poll: new versions written to the repository go live without a restart; explicit: "
        "loads, unloads and the repository index need ASL_TRITON_ADMIN_KEY",
        choices=("poll", "none", "explicit"),
    )
    poll_secs: int = option(2, "repository poll interval")
    log_path: str | None = option(None, "server log (default <workspace>/logs)")
    exit_timeout: int = option(10, "seconds to drain requests on stop")
    ready_timeout: float = option(120.0, "seconds to wait", low=0)
    max_restarts: int = option(
        5, "restarts in a row after the server dies before giving up (0: never restart)"
    )
    restart_backoff: float = option(
        1.0, "first restart delay in seconds, doubled per failed restart (max 30 s)", low=0
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`LauncherOptions` and :class:`FrontLimits`."""
    parser = build_options_parser(LauncherOptions, DESCRIPTION)
    add_options(parser, FrontLimits, "front")
    return parser


def _options_of(cls: type[T], values: dict[str, Any]) -> T:
    """The fields of ``cls`` among the values of a parser that holds several options classes."""
    names = {spec.name for spec in specs(cls)}
    return from_mapping(cls, {k: v for k, v in values.items() if k in names})


def parse_command(argv: list[str] | None) -> tuple[LauncherOptions, FrontLimits]:
    """The launcher's and the front's options; a bad or missing value ends with one usage line."""
    parser = build_parser()
    values = vars(parser.parse_args(argv))
    try:
        launcher = _options_of(LauncherOptions, values)
        limits = _options_of(FrontLimits, values)
    except OptionError as exc:
        parser.error(str(exc))
    if missing(launcher):
        parser.error(f"the following arguments are required: {', '.join(missing(launcher))}")
    return launcher, limits


def launched_server(options: LauncherOptions) -> TritonServer:
    """The server the CLI supervises: Triton on loopback, its metrics on ``--metrics-host``
    (loopback too: 3 idle 1 GB POSTs to its metrics port had held 2 GB in tritonserver, a thousand
    idle connections had starved it of files, and ``--host 0.0.0.0`` published it with the front).
    """
    return TritonServer(
        options.repo,
        http_port=options.triton_http_port or free_port(),
        grpc_port=options.grpc_port,
        metrics_port=options.metrics_port,
        model_control_mode=options.model_control_mode,
        poll_secs=options.poll_secs,
        host="127.0.0.1",
        log_path=options.log_path
        or workspace() / "logs" / f"tritonserver-{options.http_port}.log",
        metrics_host=options.metrics_host,
        exit_timeout_secs=options.exit_timeout,
        die_with_parent=True,  # started and restarted by the main thread: a kill -9 takes it
    )


def start_front(
    server: TritonServer, host: str, port: int, limits: FrontLimits, state: ServerState
) -> FrontServer:
    """The public HTTP port: the front app forwarding to the server's loopback HTTP port."""
    app = create_app(f"http://{server.http_url}", limits, state)
    return FrontServer(app, host, port, limits).start()


def give_up_message(server: TritonServer, policy: RestartPolicy, seconds: float) -> str:
    crashes = policy.max_restarts + 1
    times = "once" if crashes == 1 else f"{crashes} times"
    return (
        f"tritonserver died {times} in a row within {seconds:.0f} s and the launcher "
        f"stopped restarting it; see {server.log_path}, fix the cause, then restart the launcher"
    )


def serve_once_rebuilt(
    server: TritonServer,
    problem: str,
    state: ServerState,
    stopping: Callable[[], bool],
    options: LauncherOptions,
) -> RepositoryGuard | None:
    """Stop Triton on a repository changed outside a build, the front answering 503 with why,
    until a build (or ``accept``) records it again; then serve it under a new guard. A killed
    build had left the launcher refusing until restarted, even after the rebuild it asked
    for. None when asked to stop meanwhile."""
    server.stop()
    state.gave_up = problem
    LOG.error("error: %s; the front answers 503 until it is built again", problem)
    while not processes.sleep_unless(1.0, stopping):
        if not trusted(server.repo):
            continue
        try:
            server.start()
            server.wait_ready(options.ready_timeout, stopping)
        except (TritonServerError, OSError) as exc:
            LOG.warning("not served yet: %s", str(exc).splitlines()[0])
            server.stop()
            continue
        state.gave_up = None
        LOG.warning("the repository was built again; tritonserver is ready")
        return RepositoryGuard(server.repo)
    return None


def serve(server: TritonServer, options: LauncherOptions, limits: FrontLimits) -> int:
    """Start Triton and its front, supervise; after giving up keep the front saying so."""
    state = ServerState(restarts=lambda: max(0, server.starts - 1))
    stopping = stop_on_signals()
    try:
        server.start()
        server.wait_ready(options.ready_timeout)
        front = start_front(server, options.host, options.http_port, limits, state)
    except (TritonServerError, OSError) as exc:
        server.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"tritonserver ready: http://{options.host}:{options.http_port} (front; Triton "
        f"http://{server.http_url}) grpc {server.grpc_url} metrics {server.metrics_url} "
        f"(log {server.log_path}); Ctrl-C or SIGTERM stops it",
        flush=True,
    )
    policy = RestartPolicy(
        max_restarts=max(0, options.max_restarts), base_delay=options.restart_backoff
    )
    started, guard = time.monotonic(), RepositoryGuard(server.repo)
    try:
        while True:
            code = supervise(
                server, lambda: stopping() or bool(guard.changed()), policy, options.ready_timeout
            )
            if code or not guard.problem:
                break
            rebuilt = serve_once_rebuilt(server, guard.problem, state, stopping, options)
            if rebuilt is None:  # stopped while the repository was refused
                return 1
            guard = rebuilt
        if code:
            server.stop()
            state.gave_up = give_up_message(server, policy, time.monotonic() - started)
            LOG.error("error: %s; the front answers 503 until stopped", state.gave_up)
            while not processes.sleep_unless(1.0, stopping):
                pass
    finally:
        front.stop()  # first: its keep-alive connections would hold Triton's drain open
        server.stop()
    return code


def main(argv: list[str] | None = None) -> int:
    options, limits = parse_command(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        server = launched_server(options)
    except TritonServerError as exc:  # ASL_TRITON_ADMIN_KEY that Triton's flag cannot carry
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return serve(server, options, limits)


if __name__ == "__main__":
    sys.exit(main())

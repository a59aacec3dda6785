"""``make demo`` (after ``make run``): the local Triton on ``make run``'s repository and the live
recognition page in front of it, until Ctrl-C. The page's loopback URL is printed.

    python -m asl_recognition.web.demo [--repo DIR] [--port N] [--hold-ms MS ...]
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from asl_recognition.monitoring.settings import AlertThresholds, parse_cli
from asl_recognition.options import option
from asl_recognition.paths import workspace

from .options import WebOptions

LOG = logging.getLogger(__name__)

PROG = "python -m asl_recognition.web.demo"


@dataclass(frozen=True)
class DemoWebOptions(WebOptions):
    """Serve make run's model with the local tritonserver and the live recognition page."""

    repo: str | None = option(None, "Triton repository (default: the last pipeline run's)")
    triton_metrics_port: int = option(
        8002,
        "Triton's metrics port, where `make monitor`'s Prometheus scrapes it for the status page "
        "(taken: a free one, printed; 0: a free one)",
        low=0,
    )


def pipeline_repository() -> Path:
    """The repository the last completed ``make run`` built, else ``<workspace>/triton_repo``."""
    from asl_recognition.pipeline.runs import list_runs, step_path

    runs = [r for r in list_runs() if r.get("status") == "completed"]
    built = step_path(runs[-1], "build_triton_repo", "repo") if runs else None
    return built or workspace() / "triton_repo"


def serve(options: DemoWebOptions, thresholds: AlertThresholds, repo: Path) -> int:
    """Triton on ``repo``, supervised (restarted when it dies or a stub of it does), then the web
    app before it; leaving the ``with`` stops both, also on SIGTERM
    (:func:`.server.run_until_stopped` turns it into a return)."""
    from asl_recognition.netutil import free_port, port_in_use
    from asl_recognition.serving.triton_server import TritonServer
    from asl_recognition.supervision import supervised

    from .server import serve as serve_web

    # one per page port: a second demo on the workspace had truncated the first one's log
    log = workspace() / f"triton_web_demo-{options.port}.log"
    print(f"Starting Triton on repository {repo} (log {log})", flush=True)
    metrics_port = options.triton_metrics_port
    if not metrics_port or port_in_use(metrics_port):
        metrics_port = free_port()
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": metrics_port}
    # started by this (main) thread and restarted by the supervisor's, which lives as long:
    # a kill -9 of the demo takes tritonserver with it
    server = TritonServer(
        repo, **ports, model_control_mode="none", log_path=log, die_with_parent=True
    )
    with server as triton:
        print(f"Triton ready (gRPC {triton.grpc_url}, metrics {triton.metrics_url})", flush=True)
        if metrics_port != options.triton_metrics_port:
            print(
                f"the status page's Prometheus must scrape 127.0.0.1:{metrics_port}: "
                f"`python -m asl_recognition.monitoring.stack --triton-metrics "
                f"127.0.0.1:{metrics_port}`",
                flush=True,
            )
        # a crash or a dead stub: restarted; once the restarts run out, the page ends too
        stop_page = partial(os.kill, os.getpid(), signal.SIGTERM)
        with supervised(triton, "tritonserver", LOG, on_give_up=stop_page) as supervision:
            serve_web(replace(options, triton=triton.grpc_url), thresholds)
    if supervision.gave_up:
        print(
            f"{PROG}: error: tritonserver kept dying and was not restarted again; the page "
            f"stopped (see {log})",
            file=sys.stderr,
        )
        return 1
    return 0


def missing_repository(repo: Path) -> str | None:
    """The one line for a repository ``make run`` has not built (yet)."""
    if any(repo.glob("*/config.pbtxt")):
        return None
    return f"no Triton model repository at {repo}: run `make run` first (or pass --repo DIR)"


def port_taken(options: WebOptions) -> str | None:
    """The web port checked before Triton starts: a taken one costs no Triton start, and says
    the line ``python -m asl_recognition.web`` says (exit 2 too)."""
    from .server import check_port

    try:
        check_port(options.host, options.port)
    except OSError as exc:
        return f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    options, thresholds = parse_cli(DemoWebOptions, argv, PROG, DemoWebOptions.__doc__ or "")
    repo = Path(options.repo) if options.repo else pipeline_repository()
    problem = missing_repository(repo) or port_taken(options)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    try:
        return serve(options, thresholds, repo)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
        print(f"{PROG}: error: {str(exc).splitlines()[0] if str(exc) else exc!r}", file=sys.stderr)
        return 3


__all__ = ["DemoWebOptions", "main", "missing_repository", "pipeline_repository", "port_taken"]

if __name__ == "__main__":
    raise SystemExit(main())

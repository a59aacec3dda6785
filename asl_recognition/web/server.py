"""The web app served until Ctrl-C or SIGTERM: ``python -m asl_recognition.web``, ``make
dashboard`` (:mod:`asl_recognition.monitoring.dashboard`) and ``make demo`` (:mod:`.demo`).

One uvicorn server serves the live page on ``/`` and the status page on ``/status``, under the
same connection limit and security headers.
"""

from __future__ import annotations

import socket
import sys

from starlette.applications import Starlette

from asl_recognition.monitoring.dashboard import StatusSource, status_routes
from asl_recognition.monitoring.settings import AlertThresholds, parse_cli
from asl_recognition.monitoring.urls import mask_url
from asl_recognition.serving.front import FrontServer
from asl_recognition.stop_signals import handle_stop_signals

from .app import create_app
from .options import WebOptions


def build_app(options: WebOptions, thresholds: AlertThresholds) -> Starlette:
    """The live page's app with the status page's routes (its queries from ``thresholds``)."""
    return create_app(
        options, routes=status_routes(StatusSource.from_options(options, thresholds))
    )


def page_base(host: str, port: int) -> str:
    """The URL a browser opens: an IPv6 address in brackets (``http://::1:8080`` is no URL)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def announce(options: WebOptions, t: AlertThresholds, status_first: bool = False) -> None:
    """The two loopback URLs, the status page's with its (masked) Prometheus, job and model."""
    base = page_base(options.host, options.port)
    live = f"live recognition page: {base}/ (Triton gRPC {options.triton}, model {options.model})"
    status = (
        f"status page on {base}/status (Prometheus {mask_url(options.prometheus)}, "
        f"job {t.triton_job}, model {t.model_name})"
    )
    for line in (status, live) if status_first else (live, status):
        print(line, flush=True)
    print("Ctrl-C stops", flush=True)


def check_port(host: str, port: int) -> None:
    """Refuse a taken port in one line before uvicorn logs its own error and exits."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def run_until_stopped(server: FrontServer) -> None:
    """Serve in the main thread until SIGINT or SIGTERM, then return.

    uvicorn ends on either signal and then raises it again for the handler that was installed
    before it (``uvicorn/server.py``, ``Server.capture_signals``). Without a handler of ours,
    SIGTERM would kill the process there, before any ``with`` around this call (the demo's
    tritonserver) is left; with ours it is a ``KeyboardInterrupt``, caught here.
    """

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    handle_stop_signals(interrupt)
    try:
        server.server.run()
    except KeyboardInterrupt:
        pass


def serve(options: WebOptions, t: AlertThresholds, status_first: bool = False) -> None:
    """Build, announce and serve; ``OSError`` when the address cannot be used."""
    check_port(options.host, options.port)
    server = FrontServer(build_app(options, t), options.host, options.port, options)
    announce(options, t, status_first)
    run_until_stopped(server)


def main(
    argv: list[str] | None = None,
    prog: str = "python -m asl_recognition.web",
    description: str | None = None,
    status_first: bool = False,
) -> int:
    options, t = parse_cli(WebOptions, argv, prog, description or WebOptions.__doc__ or "")
    try:
        serve(options, t, status_first)
    except OSError as exc:
        reason = exc.strerror or exc
        print(
            f"{prog}: error: cannot listen on {options.host}:{options.port}: {reason}",
            file=sys.stderr,
        )
        return 2
    return 0


__all__ = ["build_app", "main", "page_base", "run_until_stopped", "serve"]

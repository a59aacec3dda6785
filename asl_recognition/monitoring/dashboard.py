"""Status page for people who run the model (``make dashboard``): its data and its HTTP server.

The page (one autoescaped Jinja2 template) is built by :mod:`.status_page`, Prometheus is read
through :mod:`.prometheus_api`, and the stdlib HTTP server serves it; no JS needed.

Shows the production model (version, classes, training/external metrics, confusion matrix) from the
registry, live request rate / latency / confidence / drift / hands found / non-finite prediction
rows queried from Prometheus's HTTP API with
the expressions the alert rules use (:mod:`.promql`), and the alerts Prometheus has firing. Every
section degrades to a clear message when its source is missing (no production model yet,
Prometheus down, no traffic) or holds NaN ("n/a").
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import option
from asl_recognition.registry.confusion import find_confusion
from asl_recognition.stop_signals import handle_stop_signals

from .alert_rules import GAVE_UP
from .prometheus_api import PromClient
from .promql import PromQL
from .settings import ThresholdOptions, parse_cli
from .status_page import json_safe, model_summary, render_page
from .urls import mask_url


# ---------------------------------------------------------------- registry side
def _load_registry_production(backend: str) -> tuple[Any | None, str | None]:
    """(record, error) for the production model; error explains why there is none."""
    try:
        from asl_recognition.registry import get_registry
    except ImportError as exc:
        return None, f"model registry not available ({exc})"
    try:
        return get_registry(backend).production(), None
    except Exception as exc:  # noqa: BLE001 - the page must render whatever the registry does
        return None, f"registry error: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- Prometheus side
def live_queries(q: PromQL) -> dict[str, str]:
    """The page's figures, from the expressions the alert rules use."""
    return {
        "up": q.up,
        "request_rate": q.request_rate,
        "error_ratio": q.error_ratio,
        "latency_p95_ms": q.latency_p95_ms,
        "latency_mean_ms": q.latency_mean_ms,
        "confidence_mean": q.confidence_mean,
        "low_confidence_ratio": q.low_confidence_ratio,
        "drift_tvd": q.drift_tvd,
        "hand_found_ratio": q.hand_found_ratio,
        "hands_checked": q.hands_checked(),
        "nonfinite_predictions": q.nonfinite_predictions(),
        "server_gave_up": f"max({GAVE_UP})",
    }


def live_status(prom: PromClient, q: PromQL) -> dict[str, Any]:
    exprs = live_queries(q)
    try:
        values = {name: prom.scalar(expr) for name, expr in exprs.items()}
        shares = prom.vector(q.class_counts(), "class")
        history = {
            "request_rate": prom.series(exprs["request_rate"]),
            "confidence_mean": prom.series(exprs["confidence_mean"]),
        }
        alerts = prom.alerts()
    except (urllib.error.URLError, OSError, RuntimeError, ValueError, KeyError) as exc:
        reason = str(exc).replace(prom.base_url, prom.display_url)
        return {"error": f"Prometheus unreachable at {prom.display_url} ({reason})"}
    total = sum(shares.values())
    return {
        "values": values,
        "class_shares": {k: v / total for k, v in shares.items()} if total > 0 else {},
        "history": history,
        "alerts": alerts,
        "windows": {"hands": q.hand_window, "nonfinite": q.nonfinite_window},
        "error": None,
    }


# ---------------------------------------------------------------- server
@dataclass
class StatusSource:
    """Where the page's data comes from; the queries are the alert rules' (same job, model)."""

    prometheus: str = "http://127.0.0.1:9090"
    registry_backend: str = "auto"
    queries: PromQL = field(default_factory=PromQL)

    def collect(self) -> dict[str, Any]:
        record, error = _load_registry_production(self.registry_backend)
        confusion = find_confusion(record) if record else {"matrix": None, "png": None}
        prom = PromClient(self.prometheus)
        return {
            "model": model_summary(record),
            "model_error": error,
            "confusion": confusion,
            "live": live_status(prom, self.queries),
            "window": self.queries.window,
            "prometheus": prom.display_url,
        }


def _page(source: StatusSource) -> bytes:
    return render_page(source.collect()).encode()


def make_server(source: StatusSource, host: str, port: int) -> ThreadingHTTPServer:
    """The page on ``/``, ``/api/status`` (JSON), ``/confusion.png``; ``/healthz`` renders."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _route(self, path: str) -> tuple[int, bytes, str]:
            if path == "/healthz":
                try:
                    _page(source)  # healthy only when the page itself renders
                except Exception as exc:  # noqa: BLE001 - reported, not raised
                    return 503, f"not ok: {type(exc).__name__}: {exc}\n".encode(), "text/plain"
                return 200, b"ok\n", "text/plain"
            if path in ("/", "/index.html"):
                return 200, _page(source), "text/html; charset=utf-8"
            if path == "/api/status":
                status = json_safe(source.collect())
                return 200, json.dumps(status, allow_nan=False).encode(), "application/json"
            if path == "/confusion.png":
                record, _ = _load_registry_production(source.registry_backend)
                png = find_confusion(record).get("png") if record else None
                if png and Path(png).is_file():
                    return 200, Path(png).read_bytes(), "image/png"
                return 404, b"no confusion matrix image\n", "text/plain"
            return 404, b"not found\n", "text/plain"

        def do_GET(self) -> None:  # noqa: N802
            path = urllib.parse.urlparse(self.path).path
            try:
                code, body, ctype = self._route(path)
            except Exception as exc:  # noqa: BLE001 - answer with the error, never hang up
                code, ctype = 500, "text/plain; charset=utf-8"
                body = f"status page error: {type(exc).__name__}: {exc}\n".encode()
            self._send(code, body, ctype)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


PROG = "python -m asl_recognition.monitoring.dashboard"
DESCRIPTION = (
    "Serve the ASL model status page. Model, Prometheus job and window default to the alert "
    "thresholds (--thresholds FILE, ASL_ALERT_* env vars, --set NAME=VALUE), so the page reads "
    "what the alert rules judge."
)


@dataclass(frozen=True)
class DashboardOptions(ThresholdOptions):
    """The status page's command line; ``--model-name``/``--window`` override thresholds."""

    host: str = option("127.0.0.1", "listen address")
    port: int = option(8080, "listen port (0: any free port)", low=0, high=65535)
    prometheus: str = option(
        "http://127.0.0.1:9090",
        "Prometheus base URL; http://USER:PASS@HOST:PORT for basic auth (shown masked)",
    )
    model_name: str | None = option(None, "Triton model clients call (default: model_name, asl)")
    window: str | None = option(None, "rate window for live figures (default: window, 5m)")
    registry_backend: str = option(
        "auto", "where the production model is read", choices=("auto", "local", "clearml")
    )

    def threshold_overrides(self) -> dict[str, Any]:
        chosen = {"model_name": self.model_name, "window": self.window}
        own = {name: value for name, value in chosen.items() if value is not None}
        return {**super().threshold_overrides(), **own}


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`DashboardOptions` (also for the README table)."""
    parser = build_options_parser(DashboardOptions, DESCRIPTION)
    parser.prog = PROG
    return parser


def main(argv: list[str] | None = None) -> int:
    options, t = parse_cli(DashboardOptions, argv, PROG, DESCRIPTION)
    source = StatusSource(options.prometheus, options.registry_backend, PromQL.from_thresholds(t))
    server = make_server(source, options.host, options.port)
    print(
        f"status page on http://{options.host}:{server.server_address[1]}/ "
        f"(Prometheus {mask_url(options.prometheus)}, job {t.triton_job}, model {t.model_name}); "
        "Ctrl-C stops",
        flush=True,
    )
    interrupt_on_signals()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM stop the page cleanly, even when started as a background job.

    A shell starts background jobs with SIGINT ignored, and Python then never turns Ctrl-C into
    KeyboardInterrupt; container runtimes and process managers stop with SIGTERM.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    handle_stop_signals(interrupt)


if __name__ == "__main__":
    sys.exit(main())

"""Status page for people who run the model (``make dashboard``): its data and its routes.

The page (one autoescaped Jinja2 template) is built by :mod:`.status_page` and Prometheus is read
through :mod:`.prometheus_api`; no JS needed. It is served at ``/status`` by the live page's web
app (:mod:`asl_recognition.web`), so one server with one set of limits serves both pages.

Shows the production model (version, classes, training/external metrics, confusion matrix) from the
registry, live request rate / latency / confidence / drift / hands found / non-finite prediction
rows queried from Prometheus's HTTP API with
the expressions the alert rules use (:mod:`.promql`), and the alerts Prometheus has firing. Every
section degrades to a clear message when its source is missing (no production model yet,
Prometheus down, no traffic) or holds NaN ("n/a").
"""

from __future__ import annotations

import argparse
import functools
import sys
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import option
from asl_recognition.registry.confusion import find_confusion

from .alert_rules import GAVE_UP
from .prometheus_api import PromClient
from .promql import PromQL
from .settings import AlertThresholds, ThresholdOptions
from .status_page import json_safe, model_summary, render_page


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

    @classmethod
    def from_options(cls, options: "DashboardOptions", t: AlertThresholds) -> "StatusSource":
        return cls(options.prometheus, options.registry_backend, PromQL.from_thresholds(t))


# ---------------------------------------------------------------- routes on the web app
# The page has no script; its stylesheet and the confusion cells' colours are inline.
STATUS_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "cache-control": "no-store",
}


def _answered(endpoint: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """An error in any section is a one-line 500, never a dropped connection (sync: the
    registry and Prometheus are read in Starlette's thread pool, off the event loop)."""

    @functools.wraps(endpoint)
    def answer(request: Request) -> Response:
        try:
            return endpoint(request)
        except Exception as exc:  # noqa: BLE001 - answer with the error, never hang up
            body = f"status page error: {type(exc).__name__}: {exc}\n"
            return PlainTextResponse(body, 500, headers=STATUS_HEADERS)

    return answer


def status_routes(source: StatusSource) -> list[Route]:
    """``/status`` (the page), ``/api/status`` (JSON), ``/status/confusion.png`` and
    ``/status/healthz`` (200 only when the page renders), for the web app's ``routes``."""

    def page(_request: Request) -> Response:
        return HTMLResponse(render_page(source.collect()), headers=STATUS_HEADERS)

    def status(_request: Request) -> Response:
        return JSONResponse(json_safe(source.collect()), headers=STATUS_HEADERS)  # no NaN

    def confusion(_request: Request) -> Response:
        record, _ = _load_registry_production(source.registry_backend)
        png = find_confusion(record).get("png") if record else None
        if png and Path(png).is_file():
            return Response(Path(png).read_bytes(), media_type="image/png", headers=STATUS_HEADERS)
        return PlainTextResponse("no confusion matrix image\n", 404, headers=STATUS_HEADERS)

    def healthz(_request: Request) -> Response:
        try:
            render_page(source.collect())
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            body = f"not ok: {type(exc).__name__}: {exc}\n"
            return PlainTextResponse(body, 503, headers=STATUS_HEADERS)
        return PlainTextResponse("ok\n", headers=STATUS_HEADERS)

    views = {
        "/status": page,
        "/api/status": status,
        "/status/confusion.png": confusion,
        "/status/healthz": healthz,
    }
    return [Route(path, _answered(view), methods=["GET"]) for path, view in views.items()]


PROG = "python -m asl_recognition.monitoring.dashboard"
DESCRIPTION = (
    "Serve the ASL model status page. Model, Prometheus job and window default to the alert "
    "thresholds (--thresholds FILE, ASL_ALERT_* env vars, --set NAME=VALUE), so the page reads "
    "what the alert rules judge."
)


@dataclass(frozen=True)
class DashboardOptions(ThresholdOptions):
    """The status page's own options (the web app's options add them to its own);
    ``--model-name``/``--window`` override the thresholds."""

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
    """The command line: the web app's options, the status page's among them."""
    from asl_recognition.web.options import WebOptions

    parser = build_options_parser(WebOptions, DESCRIPTION)
    parser.prog = PROG
    return parser


def main(argv: list[str] | None = None) -> int:
    """``make dashboard``: the web app (live page on ``/``, status page on ``/status``)."""
    from asl_recognition.web.server import main as serve_web

    return serve_web(argv, PROG, DESCRIPTION, status_first=True)


if __name__ == "__main__":
    sys.exit(main())

"""Status page for people who run the model (``make dashboard``): one autoescaped Jinja2 template
(``templates/status.html``) served by the stdlib HTTP server; no JS needed.

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
import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import option
from asl_recognition.processes import handle_stop_signals
from asl_recognition.registry.base import ModelRecord
from asl_recognition.registry.confusion import find_confusion, read_classes

from .alert_rules import GAVE_UP
from .promql import PromQL
from .settings import ThresholdOptions, parse_cli
from .urls import mask_url, split_credentials

METRIC_ORDER = (
    "val_accuracy",
    "val_macro_f1",
    "test_accuracy",
    "test_macro_f1",
    "external_accuracy",
    "external_macro_f1",
)


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


def model_summary(record: ModelRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    metrics = dict(record.metrics)
    scalar = {
        k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    ordered = {k: scalar[k] for k in METRIC_ORDER if k in scalar}
    ordered.update({k: v for k, v in sorted(scalar.items()) if k not in ordered})
    return {
        "id": record.id,
        "name": record.name,
        "version": record.version,
        "created": getattr(record, "created", ""),
        "tags": list(getattr(record, "tags", []) or []),
        "dataset_id": getattr(record, "dataset_id", None),
        "task_id": getattr(record, "task_id", None),
        "classes": read_classes(record),
        "metrics": ordered,
        "baseline": bool(getattr(record, "baseline_path", None)),
    }


# ---------------------------------------------------------------- Prometheus side
class PromClient:
    """Prometheus HTTP API; credentials in the URL go into a header and never onto the page."""

    def __init__(self, base_url: str, timeout: float = 3.0) -> None:
        bare, self._auth = split_credentials(base_url)
        self.base_url = bare.rstrip("/")
        self.display_url = mask_url(base_url)
        self.timeout = timeout

    def _get(self, path: str, params: Mapping[str, Any]) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url)
        if self._auth:
            request.add_header("Authorization", self._auth)
        with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(body.get("error", "query failed"))
        return body["data"]

    def scalar(self, expr: str) -> float | None:
        """First sample's value, or None when the result is empty / NaN / infinite."""
        result = self._get("/api/v1/query", {"query": expr})["result"]
        return _finite(float(result[0]["value"][1])) if result else None

    def vector(self, expr: str, label: str) -> dict[str, float]:
        """Label value -> sample value, non-finite samples left out."""
        result = self._get("/api/v1/query", {"query": expr})["result"]
        values = {r["metric"].get(label, ""): _finite(float(r["value"][1])) for r in result}
        return {k: v for k, v in values.items() if v is not None}

    def series(self, expr: str, minutes: int = 15, points: int = 180) -> list[float | None]:
        end = time.time()
        step = max(1, int(minutes * 60 / points))
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": end - minutes * 60, "end": end, "step": step},
        )["result"]
        return [_finite(float(v)) for _, v in data[0]["values"]] if data else []

    def alerts(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/alerts", {})["alerts"]


def _finite(value: Any) -> float | None:
    """``value`` as a float, or None for missing, NaN, infinite or non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


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


# ---------------------------------------------------------------- HTML
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;
background:#f4f6f8;color:#1d2630}
header{background:#1d2630;color:#fff;padding:14px 24px;display:flex;
justify-content:space-between;align-items:baseline}
header h1{font-size:20px;margin:0} header span{font-size:13px;opacity:.75}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px;
padding:16px 24px}
section{background:#fff;border-radius:8px;padding:14px 18px;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 10px;text-transform:uppercase;letter-spacing:.04em;color:#4a5968}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 8px;text-align:left}
.kv td:first-child{color:#4a5968} .big{font-size:26px;font-weight:600}
.tiles{display:grid;grid-template-columns:repeat(3,1fr);gap:10px}
.tile{background:#f4f6f8;border-radius:6px;padding:8px 10px} .tile small{color:#4a5968}
.empty{color:#8a6d00;background:#fff8e1;border-radius:6px;padding:10px}
.err{color:#9b1c1c;background:#fdecec;border-radius:6px;padding:10px}
.alert{border-left:4px solid #d33;padding:6px 10px;margin:6px 0;background:#fdecec}
.alert.pending{border-color:#e0a100;background:#fff8e1} .ok{color:#1f7a3a;font-weight:600}
.cm td{width:15px;height:15px;padding:0;font-size:9px;text-align:center} .cm th{font-size:9px;
padding:1px} .cm td.dark{color:#fff} .cm td.gap{color:#8a6d00;font-size:7px}
.bar{background:#3b82f6;height:10px;display:inline-block;border-radius:2px}
.chips span{display:inline-block;background:#e8edf2;border-radius:4px;padding:1px 6px;
margin:2px;font-size:12px}
"""


def num(value: Any, digits: int = 2, unit: str = "", pct: bool = False) -> str:
    """A figure for the page: "—" when missing, "n/a" when not a finite number."""
    if value is None:
        return "—"
    number = _finite(value)
    if number is None:
        return "n/a"
    return f"{number * 100:.1f}%" if pct else f"{number:.{digits}f}{unit}"


def sparkline(values: list[float | None], width: int = 260, height: int = 40) -> Markup:
    """An inline SVG polyline; markup built from numbers only, so it needs no escaping."""
    points = [(i, v) for i, v in enumerate(values) if _finite(v) is not None]
    if len(points) < 2:
        return Markup("<small><i>not enough history yet</i></small>")
    hi = max(v for _, v in points) or 1.0
    n = max(len(values) - 1, 1)
    coords = " ".join(
        f"{i * width / n:.1f},{height - 2 - (v / hi) * (height - 4):.1f}" for i, v in points
    )
    return Markup(
        f'<svg width="{width}" height="{height}"><polyline fill="none" stroke="#3b82f6" '
        f'stroke-width="2" points="{coords}"/></svg>'
    )


def _cell(j: int, value: float, total: float) -> dict[str, Any]:
    if _finite(value) is None:
        return {"text": "n/a", "colour": "#eee", "cls": "gap", "title": f"{j}: not a number"}
    share = min(max(value / total, 0.0), 1.0)
    text = "" if not value else str(int(value)) if value == int(value) else f"{value:.2g}"
    colour = f"rgba(29,78,216,{share:.2f})" if value else "#fff"
    return {"text": text, "colour": colour, "cls": "dark" if share > 0.5 else "", "title": j}


def confusion_view(conf: Mapping[str, Any], classes: list[str]) -> dict[str, Any] | None:
    """Rows of cells for the template; NaN/inf cells become gaps marked n/a."""
    matrix = conf.get("matrix")
    if not matrix:
        return None
    labels = classes if len(classes) == len(matrix) else [str(i) for i in range(len(matrix))]
    rows, gaps = [], 0
    for name, row in zip(labels, matrix):
        total = sum(v for v in row if _finite(v) is not None) or 1.0
        cells = [_cell(j, value, total) for j, value in enumerate(row)]
        gaps += sum(c["cls"] == "gap" for c in cells)
        rows.append({"label": name, "cells": cells})
    return {"split": conf.get("split"), "labels": labels, "rows": rows, "gaps": gaps}


def _alerts_view(live: Mapping[str, Any]) -> list[dict[str, str]]:
    """Firing alerts first, then pending, each by name; fields the template shows."""
    shown = []
    for a in live.get("alerts") or []:
        if a.get("state") not in ("firing", "pending"):
            continue
        labels, notes = a.get("labels") or {}, a.get("annotations") or {}
        shown.append(
            {
                "state": str(a["state"]),
                "labels": {k: str(labels.get(k, "")) for k in ("alertname", "severity")},
                "annotations": {k: str(notes.get(k, "")) for k in ("summary", "description")},
            }
        )
    return sorted(shown, key=lambda a: (a["state"] != "firing", a["labels"]["alertname"]))


def _tiles(live: Mapping[str, Any], window: str) -> list[tuple[str, str]]:
    """(label, figure) per tile; hand figures stay "—" for a model without a hand pipeline."""
    values, windows = live["values"], live.get("windows") or {}
    hands, nonfinite = windows.get("hands", "?"), windows.get("nonfinite", "?")
    latency, lat_label = values.get("latency_p95_ms"), "p95 latency"
    if latency is None:
        latency, lat_label = values.get("latency_mean_ms"), "mean latency"
    up, gave_up = values.get("up"), values.get("server_gave_up")
    return [
        ("Triton", "up" if up == 1 else ("down" if up == 0 else "not scraped")),
        (
            "launcher",
            (
                "GAVE UP restarting tritonserver: restart it"
                if gave_up == 1
                else ("restarts on crashes" if gave_up == 0 else "not scraped")
            ),
        ),
        (f"requests/s ({window})", num(values.get("request_rate"))),
        ("error ratio", num(values.get("error_ratio"), pct=True)),
        (lat_label, num(latency, 1, " ms")),
        ("mean confidence", num(values.get("confidence_mean"), 3)),
        ("low-confidence share", num(values.get("low_confidence_ratio"), pct=True)),
        (f"hands found ({hands})", num(values.get("hand_found_ratio"), pct=True)),
        (f"images checked for hands ({hands})", num(values.get("hands_checked"), 0)),
        (f"NaN/Inf prediction rows ({nonfinite})", num(values.get("nonfinite_predictions"), 0)),
    ]


@functools.lru_cache(maxsize=1)
def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("asl_recognition.monitoring", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=num, sparkline=sparkline)
    return env


def render_page(status: dict[str, Any], refresh: int = 15) -> str:
    """The HTML page from :meth:`StatusSource.collect`'s dict (autoescaped template)."""
    model, live = status["model"], status["live"]
    shares = sorted((live.get("class_shares") or {}).items(), key=lambda kv: -kv[1])[:10]
    return (
        _templates()
        .get_template("status.html")
        .render(
            css=CSS,
            refresh=int(refresh),
            prometheus=status["prometheus"],
            updated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            model=model,
            model_error=status.get("model_error"),
            live=live,
            window=status["window"],
            alerts=_alerts_view(live),
            tiles=[] if live.get("error") else _tiles(live, status["window"]),
            class_shares=shares,
            confusion=confusion_view(status["confusion"], model["classes"] if model else []),
            confusion_png=bool(status["confusion"].get("png")),
        )
    )


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf replaced by None, so /api/status is strict JSON."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value if value is None or isinstance(value, (str, int, bool)) else str(value)


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

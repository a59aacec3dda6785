"""Status page for people who run the model (``make dashboard``): stdlib HTTP server, no JS needed.

Shows the production model (version, classes, training/external metrics, confusion matrix) from the
registry, live request rate / latency / confidence / drift queried from Prometheus's HTTP API, and
the alerts Prometheus has firing. Every section degrades to a clear message when its source is
missing (no production model yet, Prometheus down, no traffic).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping

from asl_recognition.registry.confusion import find_confusion, read_classes

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


def model_summary(record: Any | None) -> dict[str, Any] | None:
    if record is None:
        return None
    metrics = dict(getattr(record, "metrics", None) or {})
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
@dataclass
class PromClient:
    base_url: str
    timeout: float = 3.0

    def _get(self, path: str, params: Mapping[str, Any]) -> Any:
        url = f"{self.base_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(body.get("error", "query failed"))
        return body["data"]

    def scalar(self, expr: str) -> float | None:
        """First sample's value, or None when the result is empty / NaN."""
        result = self._get("/api/v1/query", {"query": expr})["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value

    def vector(self, expr: str, label: str) -> dict[str, float]:
        result = self._get("/api/v1/query", {"query": expr})["result"]
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}

    def series(self, expr: str, minutes: int = 15, points: int = 180) -> list[float | None]:
        end = time.time()
        step = max(1, int(minutes * 60 / points))
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": end - minutes * 60, "end": end, "step": step},
        )["result"]
        if not data:
            return []
        values = [float(v) for _, v in data[0]["values"]]
        return [None if math.isnan(v) else v for v in values]

    def alerts(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/alerts", {})["alerts"]


def live_queries(model: str, window: str) -> dict[str, str]:
    ok = f'sum(rate(nv_inference_request_success{{model="{model}"}}[{window}]))'
    fail = f'sum(rate(nv_inference_request_failure{{model="{model}"}}[{window}]))'
    return {
        "up": 'max(up{job="triton"})',
        "request_rate": f"({ok} + {fail})",
        "error_ratio": f"{fail} / ({ok} + {fail})",
        "latency_p95_ms": f'max(nv_inference_request_summary_us{{model="{model}",'
        f'quantile="0.95"}}) / 1000',
        "latency_mean_ms": f'sum(rate(nv_inference_request_duration_us{{model="{model}"}}'
        f"[{window}])) / {ok} / 1000",
        "confidence_mean": f"sum(rate(asl_prediction_confidence_sum[{window}])) / "
        f"sum(rate(asl_prediction_confidence_count[{window}]))",
        "low_confidence_ratio": f"sum(rate(asl_low_confidence_total[{window}])) / "
        f"sum(rate(asl_prediction_confidence_count[{window}]))",
        "drift_tvd": "max(asl:class_drift_tvd)",
    }


def live_status(prom: PromClient, model: str, window: str) -> dict[str, Any]:
    q = live_queries(model, window)
    try:
        values = {name: prom.scalar(expr) for name, expr in q.items()}
        shares = prom.vector(
            f"sum by (class) (increase(asl_predictions_total[{window}]))", "class"
        )
        history = {
            "request_rate": prom.series(q["request_rate"]),
            "confidence_mean": prom.series(q["confidence_mean"]),
        }
        alerts = prom.alerts()
    except (urllib.error.URLError, OSError, RuntimeError, ValueError, KeyError) as exc:
        return {"error": f"Prometheus unreachable at {prom.base_url} ({exc})"}
    total = sum(shares.values())
    return {
        "values": values,
        "class_shares": {k: v / total for k, v in shares.items()} if total > 0 else {},
        "history": history,
        "alerts": alerts,
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
padding:1px}
.bar{background:#3b82f6;height:10px;display:inline-block;border-radius:2px}
.chips span{display:inline-block;background:#e8edf2;border-radius:4px;padding:1px 6px;
margin:2px;font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: float | None, unit: str = "", digits: int = 2, pct: bool = False) -> str:
    if value is None:
        return "—"
    if pct:
        return f"{value * 100:.1f}%"
    return f"{value:.{digits}f}{unit}"


def _sparkline(values: list[float | None], width: int = 260, height: int = 40) -> str:
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(points) < 2:
        return "<small><i>not enough history yet</i></small>"
    hi = max(v for _, v in points) or 1.0
    n = max(len(values) - 1, 1)
    coords = " ".join(
        f"{i * width / n:.1f},{height - 2 - (v / hi) * (height - 4):.1f}" for i, v in points
    )
    return (
        f'<svg width="{width}" height="{height}"><polyline fill="none" stroke="#3b82f6" '
        f'stroke-width="2" points="{coords}"/></svg>'
    )


def _model_html(model: dict[str, Any] | None, reason: str | None) -> str:
    if model is None:
        why = f" ({_e(reason)})" if reason else ""
        return (
            '<section><h2>Production model</h2><p class="empty" id="no-model">No production '
            f"model yet{why}. Train and promote one: <code>make run</code>.</p></section>"
        )
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
        for k, v in (
            ("model id", model["id"]),
            ("registered", model["created"]),
            ("dataset", model["dataset_id"] or "—"),
            ("training task", model["task_id"] or "—"),
            ("tags", ", ".join(model["tags"]) or "—"),
            ("drift baseline", "stored" if model["baseline"] else "missing"),
        )
    )
    metrics = (
        "".join(f"<tr><td>{_e(k)}</td><td>{v:.4f}</td></tr>" for k, v in model["metrics"].items())
        or '<tr><td colspan="2">no metrics recorded</td></tr>'
    )
    chips = "".join(f"<span>{_e(c)}</span>" for c in model["classes"])
    return (
        f'<section id="model"><h2>Production model</h2><div class="big">{_e(model["name"])} '
        f'v{_e(model["version"])}</div><table class="kv">{rows}</table>'
        f'<h2 style="margin-top:12px">Metrics (training / external)</h2>'
        f'<table class="kv" id="metrics">{metrics}</table>'
        f'<h2 style="margin-top:12px">Classes ({len(model["classes"])})</h2>'
        f'<div class="chips" id="classes">{chips}</div></section>'
    )


def _confusion_html(conf: dict[str, Any], classes: list[str], has_model: bool) -> str:
    if not has_model:
        return ""
    matrix = conf.get("matrix")
    if not matrix:
        if conf.get("png"):
            return (
                '<section id="confusion"><h2>Confusion matrix</h2>'
                '<img src="/confusion.png" style="max-width:100%"></section>'
            )
        return (
            '<section id="confusion"><h2>Confusion matrix</h2><p class="empty">No confusion '
            "matrix stored with this model.</p></section>"
        )
    labels = classes if len(classes) == len(matrix) else [str(i) for i in range(len(matrix))]
    head = "".join(f"<th>{_e(c)}</th>" for c in labels)
    rows = []
    for name, row in zip(labels, matrix):
        total = sum(row) or 1.0
        cells = []
        for j, value in enumerate(row):
            share = value / total
            colour = f"rgba(29,78,216,{share:.2f})" if value else "#fff"
            text = f"{int(value)}" if value else ""
            style = "color:#fff" if share > 0.5 else ""
            cells.append(f'<td style="background:{colour};{style}" title="{j}">{text}</td>')
        rows.append(f"<tr><th>{_e(name)}</th>{''.join(cells)}</tr>")
    split = f" ({_e(conf['split'])} split)" if conf.get("split") else ""
    return (
        f'<section id="confusion"><h2>Confusion matrix{split}: rows true, columns predicted</h2>'
        f'<table class="cm"><tr><th></th>{head}</tr>{"".join(rows)}</table></section>'
    )


def _live_html(live: dict[str, Any], window: str) -> str:
    if live.get("error"):
        return (
            f'<section class="wide"><h2>Live</h2><p class="err">{_e(live["error"])}</p></section>'
        )
    v = live["values"]
    latency = v.get("latency_p95_ms")
    lat_label = "p95 latency"
    if latency is None:
        latency, lat_label = v.get("latency_mean_ms"), "mean latency"
    up = v.get("up")
    server = "up" if up == 1 else ("down" if up == 0 else "not scraped")
    tiles = [
        ("Triton", server),
        (f"requests/s ({window})", _fmt(v.get("request_rate"))),
        ("error ratio", _fmt(v.get("error_ratio"), pct=True)),
        (lat_label, _fmt(latency, " ms", 1)),
        ("mean confidence", _fmt(v.get("confidence_mean"), digits=3)),
        ("low-confidence share", _fmt(v.get("low_confidence_ratio"), pct=True)),
    ]
    tiles_html = "".join(
        f'<div class="tile"><small>{_e(k)}</small><div class="big">{_e(val)}</div></div>'
        for k, val in tiles
    )
    shares = sorted(live["class_shares"].items(), key=lambda kv: -kv[1])[:10]
    bars = (
        "".join(
            f'<tr><td>{_e(c)}</td><td><span class="bar" style="width:{s * 200:.0f}px"></span> '
            f"{s * 100:.1f}%</td></tr>"
            for c, s in shares
        )
        or "<tr><td>no predictions in the window</td></tr>"
    )
    drift = _fmt(v.get("drift_tvd"), digits=3)
    return (
        f'<section id="live"><h2>Live traffic (last {_e(window)})</h2>'
        f'<div class="tiles">{tiles_html}</div>'
        "<p><small>requests/s, last 15 min</small><br>"
        f"{_sparkline(live['history']['request_rate'])}"
        f"<br><small>mean confidence, last 15 min</small><br>"
        f"{_sparkline(live['history']['confidence_mean'])}</p></section>"
        f'<section id="classes-live"><h2>Predicted classes (top 10)</h2><table>{bars}</table>'
        f"<p>Drift from training distribution (total variation distance): <b>{drift}</b></p>"
        "</section>"
    )


def _alert_key(alert: Mapping[str, Any]) -> str:
    return str(alert.get("labels", {}).get("alertname", ""))


def _alerts_html(live: dict[str, Any]) -> str:
    if live.get("error"):
        return ""
    alerts = [a for a in live["alerts"] if a.get("state") in ("firing", "pending")]
    if not alerts:
        body = '<p class="ok" id="no-alerts">No alerts firing.</p>'
    else:
        body = "".join(
            f'<div class="alert {_e(a.get("state"))}"><b>{_e(a["labels"].get("alertname"))}</b>'
            f' [{_e(a.get("state"))}, {_e(a["labels"].get("severity", ""))}] '
            f'{_e(a.get("annotations", {}).get("summary", ""))}<br><small>'
            f'{_e(a.get("annotations", {}).get("description", ""))}</small></div>'
            for a in sorted(alerts, key=lambda a: (a.get("state") != "firing", _alert_key(a)))
        )
    return f'<section id="alerts" class="wide"><h2>Alerts</h2>{body}</section>'


def render_page(status: dict[str, Any], refresh: int = 15) -> str:
    model = status["model"]
    classes = model["classes"] if model else []
    parts = [
        _alerts_html(status["live"]),
        _model_html(model, status.get("model_error")),
        _live_html(status["live"], status["window"]),
        _confusion_html(status["confusion"], classes, model is not None),
    ]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{int(refresh)}'>"
        f"<title>ASL recognition: status</title><style>{CSS}</style></head><body>"
        "<header><h1>ASL recognition: model status</h1>"
        f"<span>Prometheus {_e(status['prometheus'])} · updated "
        f"{_e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}</span></header>"
        f"<main>{''.join(parts)}</main></body></html>"
    )


# ---------------------------------------------------------------- server
@dataclass
class StatusSource:
    prometheus: str = "http://127.0.0.1:9090"
    model_name: str = "asl"
    window: str = "5m"
    registry_backend: str = "auto"

    def collect(self) -> dict[str, Any]:
        record, error = _load_registry_production(self.registry_backend)
        confusion = find_confusion(record) if record else {"matrix": None, "png": None}
        return {
            "model": model_summary(record),
            "model_error": error,
            "confusion": confusion,
            "live": live_status(PromClient(self.prometheus), self.model_name, self.window),
            "window": self.window,
            "prometheus": self.prometheus,
        }


def make_server(source: StatusSource, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            path = urllib.parse.urlparse(self.path).path
            if path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif path in ("/", "/index.html"):
                page = render_page(source.collect()).encode()
                self._send(200, page, "text/html; charset=utf-8")
            elif path == "/api/status":
                status = source.collect()
                status["confusion"] = {
                    **status["confusion"],
                    "png": str(status["confusion"].get("png") or "") or None,
                }
                self._send(200, json.dumps(status, default=str).encode(), "application/json")
            elif path == "/confusion.png":
                record, _ = _load_registry_production(source.registry_backend)
                png = find_confusion(record).get("png") if record else None
                if png and Path(png).is_file():
                    self._send(200, Path(png).read_bytes(), "image/png")
                else:
                    self._send(404, b"no confusion matrix image\n", "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m asl_recognition.monitoring.dashboard",
        description="Serve the ASL model status page.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    p.add_argument("--model-name", default="asl", help="Triton model clients call")
    p.add_argument("--window", default="5m", help="rate window for live figures")
    p.add_argument("--registry-backend", default="auto", help="auto | local | clearml")
    args = p.parse_args(argv)
    source = StatusSource(args.prometheus, args.model_name, args.window, args.registry_backend)
    server = make_server(source, args.host, args.port)
    print(
        f"status page on http://{args.host}:{server.server_address[1]}/ "
        f"(Prometheus {args.prometheus}); Ctrl-C stops",
        flush=True,
    )
    stop_on_signals()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop the page cleanly, even when started as a background job.

    A shell starts background jobs with SIGINT ignored, and Python then never turns Ctrl-C into
    KeyboardInterrupt; container runtimes and process managers stop with SIGTERM.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    sys.exit(main())

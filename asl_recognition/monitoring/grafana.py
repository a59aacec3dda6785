"""Grafana dashboard for the Docker path, generated from the same PromQL as the alert rules.

``python -m asl_recognition.monitoring.grafana`` rewrites
``triton/monitoring/grafana/dashboards/asl-serving.json``; a test checks the file is current and
that every metric it queries is one Triton 2.51, the metrics step or the recording rules export.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import from_mapping, option

from . import promql
from .promql import PromQL
from .settings import AlertThresholds

OUT = Path(__file__).resolve().parents[2] / "triton" / "monitoring" / "grafana" / "dashboards"
PROG = "python -m asl_recognition.monitoring.grafana"
DESCRIPTION = "Write the Grafana dashboard JSON, generated from the alert rules' PromQL."
DS = {"type": "prometheus", "uid": "prometheus"}  # provisioning/datasources/prometheus.yml


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(
    pid: int,
    title: str,
    kind: str,
    pos: tuple[int, int, int, int],
    targets: list[tuple[str, str]],
    unit: str = "short",
    desc: str = "",
    thresholds: list[tuple[str, float | None]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    x, y, w, h = pos
    steps = [{"color": c, "value": v} for c, v in (thresholds or [("green", None)])]
    panel = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [_target(e, lg, chr(65 + i)) for i, (e, lg) in enumerate(targets)],
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {},
    }
    panel.update(extra or {})
    return panel


def _row(pid: int, title: str, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


def _panels(q: PromQL) -> list[dict[str, Any]]:
    defaults = AlertThresholds()
    # fmt: off
    return [
        _row(1, "Serving (Triton)", 0),
        _panel(2, "Triton up", "stat", (0, 1, 4, 5), [(q.up, "up")],
               thresholds=[("red", None), ("green", 1)],
               desc="1 when Prometheus scrapes Triton's metrics endpoint (alert AslTritonDown)."),
        _panel(3, "Requests / s", "timeseries", (4, 1, 10, 8),
               [(q.success_rate, "success"), (q.failure_rate, "failure")], unit="reqps",
               desc="nv_inference_request_success / _failure (alerts AslNoTraffic)."),
        _panel(4, "Error ratio", "timeseries", (14, 1, 10, 8),
               [(q.error_ratio, "errors")], unit="percentunit",
               thresholds=[("green", None), ("red", 0.05)],
               desc="Failed / all requests (alert AslHighErrorRate)."),
        _panel(5, "Model loaded", "stat", (0, 6, 4, 3), [(q.model_loaded, "loaded")],
               thresholds=[("red", None), ("green", 1)],
               desc="Triton exports statistics only for loaded models (alert AslModelNotReady)."),
        _panel(6, "Latency", "timeseries", (0, 9, 12, 8), [
            (q.latency_p95_ms, "p95"), (q.latency_mean_ms, "mean"),
            (q.queue_mean_ms, "queue (mean)"),
        ], unit="ms", desc="p95 needs tritonserver --metrics-config summary_latencies=true "
           "(alert AslHighLatencyP95)."),
        _panel(7, "Dynamic batching: images per execution", "timeseries", (12, 9, 6, 8), [
            (q.batch_mean, "mean batch"),
        ]),
        _panel(8, "Triton CPU", "timeseries", (18, 9, 6, 8), [
            (q.cpu_utilisation, "cpu utilisation"),
        ], unit="percentunit"),
        _row(9, "Model quality", 17),
        _panel(10, "Mean top-1 confidence", "timeseries", (0, 18, 12, 8), [
            (promql.CONFIDENCE_MEAN, "live"),
            (q.baseline_confidence_mean, "validation baseline"),
        ], unit="percentunit",
           desc="Alerts AslMeanConfidenceLow, AslConfidenceDroppedVsBaseline."),
        _panel(11, "Low-confidence share", "timeseries", (12, 18, 12, 8), [
            (promql.LOW_CONFIDENCE_RATIO, "below serving threshold"),
        ], unit="percentunit", desc="Alert AslLowConfidenceRateHigh."),
        _panel(12, "Confidence distribution", "heatmap", (0, 26, 12, 9), [
            (q.confidence_histogram, "{{le}}"),
        ], extra={"options": {"calculate": False, "yAxis": {"unit": "percentunit"}}}),
        _panel(13, "Class-distribution drift (total variation distance)", "timeseries",
               (12, 26, 12, 9), [(promql.CLASS_DRIFT_TVD, "TVD vs training")],
               thresholds=[("green", None), ("orange", 0.3)],
               desc="0 = same class shares as training, 1 = disjoint "
               "(AslClassDistributionDrift)."),
        _panel(14, "Predicted class share vs training", "barchart", (0, 35, 24, 9), [
            (promql.PREDICTED_CLASS_SHARE, "{{class}}"),
            (promql.BASELINE_CLASS_SHARE, "{{class}} (training)"),
        ], unit="percentunit", extra={"options": {"xField": "class"}}),
        _panel(17, "Hands found", "timeseries", (0, 44, 12, 8), [
            (promql.HAND_FOUND_RATIO, f"alert window ({defaults.hand_window})"),
            (q.hand_found_ratio_in(q.window), "live"),
        ], unit="percentunit",
           thresholds=[("red", None), ("green", defaults.min_hand_found_ratio)],
           desc="Share of images the hand pipeline checked in which it found a hand; falls when "
           "the camera, framing or lighting drifts. Empty for a model without a hand pipeline "
           "(alert AslHandFoundRatioLow)."),
        _panel(18, "NaN/Inf prediction rows", "timeseries", (12, 44, 12, 8), [
            (q.nonfinite_predictions(q.window), "rows"),
        ], thresholds=[("green", None), ("red", defaults.max_nonfinite_predictions + 1)],
           desc="Prediction rows with NaN or Inf probabilities, left out of the other quality "
           "metrics (alert AslNonFinitePredictions)."),
        _row(15, "Alerts", 52),
        _panel(16, "Firing alerts", "table", (0, 53, 24, 7), [
            (q.firing_alerts, "{{alertname}}"),
        ], extra={"options": {"showHeader": True}}),
    ]
    # fmt: on


def dashboard() -> dict[str, Any]:
    """The dashboard JSON; queries come from :class:`PromQL` with Grafana's variables."""
    panels = _panels(PromQL.for_grafana())
    for panel in panels:
        if panel["type"] in ("barchart", "table"):
            for target in panel["targets"]:
                target.update({"instant": True, "format": "table"})
    return {
        "uid": "asl-serving",
        "title": "ASL recognition: serving and model quality",
        "tags": ["asl", "triton"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "model",
                    "label": "Triton model",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(nv_inference_request_success, model)",
                        "refId": "model",
                    },
                    "definition": "label_values(nv_inference_request_success, model)",
                    "current": {"text": "asl", "value": "asl"},
                    "refresh": 1,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (matchers, ranges, grouping, calls removed)."""
    e = re.sub(r"\{[^}]*\}", "", expr)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\b", "", e)
    tokens = re.findall(r"(?<![\w:$])[A-Za-z_:][\w:]*\b(?!\s*\()", e)
    return {t for t in tokens if t.lower() not in _PROMQL_WORDS}


def exprs(dash: dict[str, Any]) -> list[str]:
    """Every query of a dashboard (rows excluded)."""
    return [t["expr"] for p in dash.get("panels", []) for t in p.get("targets", [])]


def write(out_dir: Path = OUT) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "asl-serving.json"
    path.write_text(json.dumps(dashboard(), indent=2) + "\n")
    return path


@dataclass(frozen=True)
class GrafanaOptions:
    """Where the generated dashboard goes."""

    out_dir: str = option(str(OUT), "folder the dashboard (asl-serving.json) is written to")


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`GrafanaOptions` (also for the README table)."""
    parser = build_options_parser(GrafanaOptions, DESCRIPTION)
    parser.prog = PROG
    return parser


def main(argv: list[str] | None = None) -> int:
    options = from_mapping(GrafanaOptions, vars(build_parser().parse_args(argv)))
    print(f"wrote {write(Path(options.out_dir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

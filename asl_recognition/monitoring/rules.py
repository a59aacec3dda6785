"""Prometheus alert and recording rules rendered from :class:`AlertThresholds` and a baseline.

Metrics used (checked against a real tritonserver 2.51 on this machine):
- Triton: ``nv_inference_request_success`` / ``nv_inference_request_failure{reason}`` counters,
  ``nv_inference_request_duration_us`` (cumulative counter), and the latency summary
  ``nv_inference_request_summary_us{quantile}`` that exists only with
  ``--metrics-config summary_latencies=true``; a model's series disappear when it is unloaded.
- The ensemble's metrics step: ``asl_prediction_confidence`` (histogram),
  ``asl_predictions_total{class}``,
  ``asl_low_confidence_total``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .baseline import Baseline
from .settings import AlertThresholds

ALERT_NAMES = (
    "AslTritonDown",
    "AslModelNotReady",
    "AslNoTraffic",
    "AslHighErrorRate",
    "AslHighLatencyP95",
    "AslMeanConfidenceLow",
    "AslLowConfidenceRateHigh",
    "AslConfidenceDroppedVsBaseline",
    "AslClassDistributionDrift",
)


def _num(value: float) -> str:
    """PromQL literal without float noise (0.6 not 0.6000000000000001)."""
    return f"{float(value):g}"


def _exprs(t: AlertThresholds) -> dict[str, str]:
    m, w = t.model_name, t.window
    ok = f'sum(rate(nv_inference_request_success{{model="{m}"}}[{w}]))'
    fail = f'sum(rate(nv_inference_request_failure{{model="{m}"}}[{w}]))'
    conf_rate = f"sum(rate(asl_prediction_confidence_count[{w}]))"
    conf_mean = f"(sum(rate(asl_prediction_confidence_sum[{w}])) / {conf_rate})"
    enough = (
        f"sum(increase(asl_prediction_confidence_count[{w}])) >= {_num(t.min_confidence_samples)}"
    )
    p95 = f'max(nv_inference_request_summary_us{{model="{m}",quantile="0.95"}}) / 1000'
    mean_ms = f'sum(rate(nv_inference_request_duration_us{{model="{m}"}}[{w}])) / {ok} / 1000'
    return {
        "latency_ms": f"(({p95}) or ({mean_ms}))",
        "error_ratio": f"{fail} / ({ok} + {fail})",
        "confidence_mean": conf_mean,
        "enough_samples": enough,
        "low_conf_ratio": (
            f"sum(rate(asl_low_confidence_total[{w}]))"
            f" / sum(rate(asl_prediction_confidence_count[{w}]))"
        ),
    }


def recording_rules(t: AlertThresholds) -> dict[str, Any]:
    """Series the status page and Grafana read (names carry no window: it is configurable)."""
    e = _exprs(t)
    m, w, dw = t.model_name, t.window, t.drift_window
    share = "asl:predicted_class_share"
    base = "asl:baseline_class_share"
    tvd = (
        f"0.5 * (sum(abs(({share} or on(class) ({base} * 0)) - on(class) {base}))"
        f" + (sum({share} unless on(class) {base}) or vector(0)))"
    )
    return {
        "name": "asl_recording",
        "rules": [
            {
                "record": "asl:request_rate",
                "expr": f'sum(rate(nv_inference_request_success{{model="{m}"}}[{w}]))'
                f' + sum(rate(nv_inference_request_failure{{model="{m}"}}[{w}]))',
            },
            {"record": "asl:request_error_ratio", "expr": e["error_ratio"]},
            {"record": "asl:request_latency_ms", "expr": e["latency_ms"]},
            {"record": "asl:confidence_mean", "expr": e["confidence_mean"]},
            {"record": "asl:low_confidence_ratio", "expr": e["low_conf_ratio"]},
            {
                "record": share,
                "expr": f"sum by (class) (increase(asl_predictions_total[{dw}]))"
                f" / on() group_left() sum(increase(asl_predictions_total[{dw}]))",
            },
            {
                "record": "asl:class_drift_tvd",
                "expr": f"({tvd}) and on() (sum(increase(asl_predictions_total[{dw}])) > 0)",
            },
        ],
    }


def alert_rules(t: AlertThresholds) -> dict[str, Any]:
    """The alert group; every threshold comes from ``t``."""
    e = _exprs(t)
    m, job = t.model_name, t.triton_job
    lbl = {"model": m}

    def alert(name: str, expr: str, for_: str, severity: str, summary: str, desc: str) -> dict:
        return {
            "alert": name,
            "expr": expr,
            "for": for_,
            "labels": {"severity": severity, **lbl},
            "annotations": {"summary": summary, "description": desc},
        }

    return {
        "name": "asl_alerts",
        "rules": [
            alert(
                "AslTritonDown",
                f'up{{job="{job}"}} == 0',
                t.not_ready_for,
                "critical",
                "Triton metrics endpoint is down",
                "Prometheus cannot scrape {{ $labels.instance }}: the server is down or "
                "unreachable.",
            ),
            alert(
                "AslModelNotReady",
                f'absent(nv_inference_request_success{{model="{m}"}})'
                f' and on() (max(up{{job="{job}"}}) == 1)',
                t.not_ready_for,
                "critical",
                f"Model {m} is not loaded in Triton",
                "Triton is up but exports no statistics for the model: it failed to load or "
                "was unloaded.",
            ),
            alert(
                "AslNoTraffic",
                f'sum(increase(nv_inference_request_success{{model="{m}"}}'
                f"[{t.no_traffic_window}]))"
                f' + sum(increase(nv_inference_request_failure{{model="{m}"}}'
                f"[{t.no_traffic_window}])) < {_num(t.no_traffic_min_requests)}",
                t.no_traffic_for,
                "warning",
                f"No inference requests for {m}",
                f"Fewer than {_num(t.no_traffic_min_requests)} requests in the last "
                f"{t.no_traffic_window}: clients may be broken or routed elsewhere.",
            ),
            alert(
                "AslHighErrorRate",
                f"{e['error_ratio']} > {_num(t.error_ratio)}",
                t.error_for,
                "critical",
                f"Inference error ratio above {_num(t.error_ratio)}",
                "{{ $value | humanizePercentage }} of requests failed over the last "
                f"{t.window}.",
            ),
            alert(
                "AslHighLatencyP95",
                f"{e['latency_ms']} > {_num(t.latency_p95_ms)}",
                t.latency_for,
                "warning",
                f"p95 request latency above {_num(t.latency_p95_ms)} ms",
                'p95 latency is {{ $value | printf "%.1f" }} ms (Triton latency summary; '
                "mean latency "
                "when the server runs without summary_latencies=true).",
            ),
            alert(
                "AslMeanConfidenceLow",
                f"({e['confidence_mean']} < {_num(t.min_mean_confidence)})"
                f" and on() ({e['enough_samples']})",
                t.confidence_for,
                "warning",
                f"Mean top-1 confidence below {_num(t.min_mean_confidence)}",
                'Mean confidence is {{ $value | printf "%.2f" }} over the last '
                f"{t.window}: inputs may differ from the training data.",
            ),
            alert(
                "AslLowConfidenceRateHigh",
                f"({e['low_conf_ratio']} > {_num(t.max_low_confidence_ratio)})"
                f" and on() ({e['enough_samples']})",
                t.confidence_for,
                "warning",
                f"More than {_num(t.max_low_confidence_ratio)} of predictions are low-confidence",
                "{{ $value | humanizePercentage }} of predictions fell below the serving "
                "low-confidence threshold.",
            ),
            alert(
                "AslConfidenceDroppedVsBaseline",
                f"({e['confidence_mean']} < on() (max(asl:baseline_confidence_mean)"
                f" - {_num(t.max_confidence_drop)})) and on() ({e['enough_samples']})",
                t.confidence_for,
                "warning",
                f"Mean confidence dropped more than {_num(t.max_confidence_drop)} "
                "below validation",
                'Live mean confidence {{ $value | printf "%.2f" }} is well below the '
                "validation mean "
                "stored with the model.",
            ),
            alert(
                "AslClassDistributionDrift",
                f"(asl:class_drift_tvd > {_num(t.drift_max_tvd)}) and on()"
                f" (sum(increase(asl_predictions_total[{t.drift_window}]))"
                f" >= {_num(t.drift_min_predictions)})",
                t.drift_for,
                "warning",
                "Predicted-class distribution drifted from the training baseline",
                'Total variation distance {{ $value | printf "%.2f" }} between predicted classes '
                f"over {t.drift_window} and the training class shares.",
            ),
        ],
    }


def baseline_rules(baseline: Baseline | None) -> dict[str, Any]:
    """Constant series ``asl:baseline_class_share{class}`` and ``asl:baseline_confidence_mean``."""
    rules: list[dict[str, Any]] = []
    if baseline is not None:
        for cls, share in sorted(baseline.class_shares.items()):
            rules.append(
                {
                    "record": "asl:baseline_class_share",
                    "expr": f"vector({share:.6g})",
                    "labels": {"class": cls},
                }
            )
        if baseline.confidence_mean is not None:
            rules.append(
                {
                    "record": "asl:baseline_confidence_mean",
                    "expr": f"vector({baseline.confidence_mean:.6g})",
                }
            )
    return {"name": "asl_baseline", "rules": rules}


def dump_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, width=1000, allow_unicode=True)


HEADER = (
    "# Generated by asl_recognition.monitoring.rules: do not edit by hand.\n"
    "# Re-render: python -m asl_recognition.monitoring.render --out triton/monitoring\n"
)


def write_rules(
    rules_dir: str | Path, thresholds: AlertThresholds, baseline: Baseline | None
) -> list[Path]:
    """Write ``asl_alerts.yml`` (alerts + recording) and ``asl_baseline.yml``; return paths."""
    rules_dir = Path(rules_dir)
    rules_dir.mkdir(parents=True, exist_ok=True)
    alerts = rules_dir / "asl_alerts.yml"
    alerts.write_text(
        HEADER + dump_yaml({"groups": [recording_rules(thresholds), alert_rules(thresholds)]})
    )
    base = rules_dir / "asl_baseline.yml"
    src = f"# baseline: {baseline.source}\n" if baseline is not None and baseline.source else ""
    base.write_text(HEADER + src + dump_yaml({"groups": [baseline_rules(baseline)]}))
    return [alerts, base]

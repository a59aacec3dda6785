"""Prometheus alert and recording rules rendered from :class:`AlertThresholds` and a baseline.

The expressions come from :mod:`.promql`, which the status page and Grafana read too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import promql
from .baseline import Baseline
from .promql import PromQL, num
from .settings import AlertThresholds

# Exported by the launcher's front (asl_recognition.serving.front.metrics_text).
GAVE_UP = "asl_server_gave_up"
RESTARTS = "asl_server_restarts_total"

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
    "AslHandFoundRatioLow",
    "AslNonFinitePredictions",
    "AslServerGaveUp",
    "AslServerRestarted",
)


def recording_rules(t: AlertThresholds) -> dict[str, Any]:
    """Series the drift alert and Grafana read; the confidence ones are also handy ad hoc."""
    q = PromQL.from_thresholds(t)
    return {
        "name": "asl_recording",
        "rules": [
            {"record": promql.CONFIDENCE_MEAN, "expr": q.confidence_mean},
            {"record": promql.LOW_CONFIDENCE_RATIO, "expr": q.low_confidence_ratio},
            {"record": promql.PREDICTED_CLASS_SHARE, "expr": q.predicted_class_share},
            {"record": promql.CLASS_DRIFT_TVD, "expr": q.class_drift_tvd},
            {"record": promql.HAND_FOUND_RATIO, "expr": q.hand_found_ratio},
        ],
    }


def _alert(
    t: AlertThresholds, name: str, expr: str, for_: str, severity: str, summary: str, desc: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "model": t.model_name},
        "annotations": {"summary": summary, "description": desc},
    }


def _serving_alerts(t: AlertThresholds, q: PromQL) -> list[dict[str, Any]]:
    """Server down, model not loaded, no traffic, errors, latency."""
    m = t.model_name
    return [
        _alert(
            t, "AslTritonDown", q.target_down, t.not_ready_for, "critical",
            "Triton metrics endpoint is down",
            "Prometheus cannot scrape {{ $labels.instance }}: the server is down or unreachable.",
        ),
        _alert(
            t, "AslModelNotReady", q.model_absent, t.not_ready_for, "critical",
            f"Model {m} is not loaded in Triton",
            "Triton is up but exports no statistics for the model: it failed to load or "
            "was unloaded.",
        ),
        _alert(
            t, "AslNoTraffic",
            f"{q.requests_in(t.no_traffic_window)} < {num(t.no_traffic_min_requests)}",
            t.no_traffic_for, "warning", f"No inference requests for {m}",
            f"Fewer than {num(t.no_traffic_min_requests)} requests in the last "
            f"{t.no_traffic_window}: clients may be broken or routed elsewhere.",
        ),
        _alert(
            t, "AslHighErrorRate", f"{q.error_ratio} > {num(t.error_ratio)}", t.error_for,
            "critical", f"Inference error ratio above {num(t.error_ratio)}",
            "{{ $value | humanizePercentage }} of requests failed over the last "
            f"{t.window}.",
        ),
        _alert(
            t, "AslHighLatencyP95", f"{q.latency_ms} > {num(t.latency_p95_ms)}", t.latency_for,
            "warning", f"p95 request latency above {num(t.latency_p95_ms)} ms",
            'p95 latency is {{ $value | printf "%.1f" }} ms (Triton latency summary; '
            "mean latency when the server runs without summary_latencies=true).",
        ),
    ]  # fmt: skip


def _quality_alerts(t: AlertThresholds, q: PromQL) -> list[dict[str, Any]]:
    """Confidence against a floor and against the baseline; class-distribution drift."""
    enough = f" and on() ({q.enough_confidence_samples(t.min_confidence_samples)})"
    return [
        _alert(
            t, "AslMeanConfidenceLow",
            f"({q.confidence_mean} < {num(t.min_mean_confidence)}){enough}",
            t.confidence_for, "warning",
            f"Mean top-1 confidence below {num(t.min_mean_confidence)}",
            'Mean confidence is {{ $value | printf "%.2f" }} over the last '
            f"{t.window}: inputs may differ from the training data.",
        ),
        _alert(
            t, "AslLowConfidenceRateHigh",
            f"({q.low_confidence_ratio} > {num(t.max_low_confidence_ratio)}){enough}",
            t.confidence_for, "warning",
            f"More than {num(t.max_low_confidence_ratio)} of predictions are low-confidence",
            "{{ $value | humanizePercentage }} of predictions fell below the serving "
            "low-confidence threshold.",
        ),
        _alert(
            t, "AslConfidenceDroppedVsBaseline",
            f"({q.confidence_mean} < on() ({q.baseline_confidence_mean}"
            f" - {num(t.max_confidence_drop)})){enough}",
            t.confidence_for, "warning",
            f"Mean confidence dropped more than {num(t.max_confidence_drop)} below validation",
            'Live mean confidence {{ $value | printf "%.2f" }} is well below the validation '
            "mean stored with the model.",
        ),
        _alert(
            t, "AslClassDistributionDrift",
            f"({promql.CLASS_DRIFT_TVD} > {num(t.drift_max_tvd)}) and on()"
            f" ({q.drift_window_predictions} >= {num(t.drift_min_predictions)})",
            t.drift_for, "warning",
            "Predicted-class distribution drifted from the training baseline",
            'Total variation distance {{ $value | printf "%.2f" }} between predicted classes '
            f"over {t.drift_window} and the training class shares.",
        ),
    ]  # fmt: skip


def _input_alerts(t: AlertThresholds, q: PromQL) -> list[dict[str, Any]]:
    """What reaches the classifier: hands found in the photos, finite probabilities."""
    return [
        _alert(
            t, "AslHandFoundRatioLow",
            f"({q.hand_found_ratio} < {num(t.min_hand_found_ratio)}) and on()"
            f" ({q.hands_checked()} >= {num(t.hand_min_checked)})",
            t.hand_for, "warning",
            f"Hands found in fewer than {t.min_hand_found_ratio:.0%} of checked images",
            "A hand was found in {{ $value | humanizePercentage }} of the images checked over "
            f"the last {t.hand_window}: the camera, framing or lighting may have changed.",
        ),
        _alert(
            t, "AslNonFinitePredictions",
            f"{q.nonfinite_predictions()} > {num(t.max_nonfinite_predictions)}",
            t.nonfinite_for, "critical",
            "Predictions with NaN or Inf probabilities",
            'About {{ $value | printf "%.0f" }} prediction rows held NaN or Inf in the last '
            f"{t.nonfinite_window}: clients got unusable probabilities (a broken model or a "
            "direct call to the metrics step); they are left out of the other metrics.",
        ),
    ]  # fmt: skip


def _launcher_alerts(t: AlertThresholds) -> list[dict[str, Any]]:
    """The local launcher stopped serving (a crashing server, or a model repository changed
    since its last build), or restarted a dead server: each restart took seconds of 502s and
    lost the requests in flight, and is over long before ``AslTritonDown``'s ``for``."""
    restarts = f"sum(increase({RESTARTS}[{t.restart_window}]))"
    restarted = _alert(
        t, "AslServerRestarted", f"{restarts} > {num(t.max_server_restarts)}", "0m", "warning",
        "The launcher restarted a dead tritonserver",
        'tritonserver died and was restarted about {{ $value | printf "%.0f" }} times in the '
        f"last {t.restart_window}: requests in flight were lost and clients got 502 meanwhile. "
        "Read the server log (a crashing input, memory).",
    )  # fmt: skip
    return [_launcher_gave_up(t), restarted]


def _launcher_gave_up(t: AlertThresholds) -> dict[str, Any]:
    """The local launcher stopped serving (its front exports the flag)."""
    return _alert(
        t, "AslServerGaveUp", f"max({GAVE_UP}) > 0", "0m", "critical",
        "The launcher gave up serving",
        "tritonserver kept dying (6 times in a row with the default restart policy), or its "
        "model repository changed since its last build, and the launcher stopped it; its front "
        "answers 503 with the reason (/healthz, the status page). Fix the cause (the server "
        "log; a rebuild with make serve), then restart the launcher.",
    )  # fmt: skip


def alert_rules(t: AlertThresholds) -> dict[str, Any]:
    """The alert group; every threshold comes from ``t``."""
    q = PromQL.from_thresholds(t)
    rules = [*_serving_alerts(t, q), *_quality_alerts(t, q), *_input_alerts(t, q)]
    rules.extend(_launcher_alerts(t))
    return {"name": "asl_alerts", "rules": rules}


def baseline_rules(baseline: Baseline | None) -> dict[str, Any]:
    """Constant series ``asl:baseline_class_share{class}`` and ``asl:baseline_confidence_mean``."""
    rules: list[dict[str, Any]] = []
    if baseline is not None:
        for cls, share in sorted(baseline.class_shares.items()):
            rules.append(
                {
                    "record": promql.BASELINE_CLASS_SHARE,
                    "expr": f"vector({share:.6g})",
                    "labels": {"class": cls},
                }
            )
        if baseline.confidence_mean is not None:
            rules.append(
                {
                    "record": promql.BASELINE_CONFIDENCE_MEAN,
                    "expr": f"vector({baseline.confidence_mean:.6g})",
                }
            )
    return {"name": "asl_baseline", "rules": rules}


def dump_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, width=1000, allow_unicode=True)


HEADER = (
    "# Generated by asl_recognition.monitoring.alert_rules: do not edit by hand.\n"
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

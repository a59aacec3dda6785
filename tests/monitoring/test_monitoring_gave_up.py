"""Issue 19.18: the launcher giving up shows on the status page and in the alert rule set.

The launcher's front exports ``asl_server_gave_up`` (tests/serving/test_serving_front.py runs
the real launcher into that state); here the page renders it from Prometheus's answer, the rule
set alerts on that same series, and the local stack scrapes the front for it.
"""

from __future__ import annotations

from asl_recognition.monitoring.alert_rules import ALERT_NAMES, GAVE_UP, alert_rules
from asl_recognition.monitoring.dashboard import live_queries
from asl_recognition.monitoring.prometheus_config import render_prometheus_config
from asl_recognition.monitoring.promql import PromQL
from asl_recognition.monitoring.settings import AlertThresholds
from asl_recognition.monitoring.status_page import render_page
from asl_recognition.serving.front import ServerState, metrics_text


def _page(gave_up: float | None) -> str:
    values = {"up": 0.0, "server_gave_up": gave_up}
    status = {
        "model": None,
        "model_error": "no production model",
        "confusion": {"matrix": None, "png": None},
        "live": {
            "values": values,
            "alerts": [],
            "class_shares": {},
            "history": {"request_rate": [], "confidence_mean": []},
            "error": None,
        },
        "window": "5m",
        "prometheus": "http://127.0.0.1:9090",
    }
    return render_page(status)


def test_the_page_says_the_launcher_gave_up() -> None:
    assert live_queries(PromQL())["server_gave_up"] == f"max({GAVE_UP})"
    assert "GAVE UP serving (its /healthz says why): restart it" in _page(1.0)
    assert "GAVE UP" not in _page(0.0) and "restarts on crashes" in _page(0.0)


def test_the_rule_set_alerts_on_the_series_the_front_exports() -> None:
    rules = {r["alert"]: r for r in alert_rules(AlertThresholds())["rules"]}
    assert "AslServerGaveUp" in ALERT_NAMES
    rule = rules["AslServerGaveUp"]
    assert rule["expr"] == f"max({GAVE_UP}) > 0" and rule["labels"]["severity"] == "critical"
    state = ServerState(gave_up="tritonserver died 6 times in a row")
    assert f"\n{GAVE_UP} 1\n" in metrics_text(state)
    assert f"\n{GAVE_UP} 0\n" in metrics_text(ServerState())


def test_the_local_stack_scrapes_the_launcher_front() -> None:
    config = render_prometheus_config(["127.0.0.1:8002"], [], [], launcher_targets=["h:8000"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["asl_launcher"]["static_configs"] == [{"targets": ["h:8000"]}]

"""Render ``prometheus.yml``: scrape Triton (job ``triton``), itself, Alertmanager; load rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .settings import PROMETHEUS_DURATION


def render_prometheus_config(
    triton_targets: list[str],
    alertmanager_targets: list[str],
    rule_files: list[str],
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    self_target: str | None = None,
    triton_job: str = "triton",
    launcher_targets: list[str] | None = None,
) -> dict[str, Any]:
    """The config dict; job ``triton_job`` must match the alert rules' ``up{job=...}``."""
    scrape: list[dict[str, Any]] = [
        {"job_name": triton_job, "static_configs": [{"targets": list(triton_targets)}]},
    ]
    if launcher_targets:  # the launcher's front: asl_server_gave_up (alert AslServerGaveUp)
        scrape.append(
            {"job_name": "asl_launcher", "static_configs": [{"targets": list(launcher_targets)}]}
        )
    if self_target:
        scrape.append({"job_name": "prometheus", "static_configs": [{"targets": [self_target]}]})
    if alertmanager_targets:
        scrape.append(
            {"job_name": "alertmanager", "static_configs": [{"targets": alertmanager_targets}]}
        )
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
            "scrape_timeout": _min_duration(scrape_interval, "10s"),
            "external_labels": {"service": "asl-recognition"},
        },
        "rule_files": list(rule_files),
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": list(alertmanager_targets)}]}]
        },
        "scrape_configs": scrape,
    }


_UNITS = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}


def _seconds(duration: str) -> float:
    """Seconds of a Prometheus duration (``1m30s`` too: it had ended the CLI in a traceback)."""
    match = PROMETHEUS_DURATION.match(duration)
    if not duration or match is None:
        raise ValueError(f"{duration!r} is not a Prometheus duration (e.g. 15s, 1m, 1m30s)")
    parts = (re.fullmatch(r"(\d+)(\D+)", part) for part in match.groups() if part)
    return sum(int(p.group(1)) * _UNITS[p.group(2)] for p in parts if p)


def _min_duration(a: str, b: str) -> str:
    """Prometheus rejects scrape_timeout > scrape_interval."""
    return a if _seconds(a) <= _seconds(b) else b


def write_prometheus_config(path: str | Path, config: dict[str, Any]) -> Path:
    from .alert_rules import dump_yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(config))
    return path

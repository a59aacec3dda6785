"""Render ``prometheus.yml``: scrape Triton (job ``triton``), itself, Alertmanager; load rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if duration.endswith(unit) and duration[: -len(unit)].isdigit():
            return int(duration[: -len(unit)]) * units[unit]
    raise ValueError(f"unsupported duration {duration!r} (use e.g. 1s, 15s, 1m)")


def _min_duration(a: str, b: str) -> str:
    """Prometheus rejects scrape_timeout > scrape_interval."""
    return a if _seconds(a) <= _seconds(b) else b


def write_prometheus_config(path: str | Path, config: dict[str, Any]) -> Path:
    from .alert_rules import dump_yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(config))
    return path

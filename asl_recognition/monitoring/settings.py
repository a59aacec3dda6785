"""Alert thresholds: one dataclass, overridable by a YAML file, ``ASL_ALERT_*`` env vars and CLI.

Precedence (last wins): built-in defaults < YAML/JSON file < environment < explicit overrides.
Every threshold of every alert lives here so operators never edit PromQL to tune alerting.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from asl_recognition.options import build_parser, from_mapping, option

ENV_PREFIX = "ASL_ALERT_"
# Prometheus's own duration grammar: units from the largest down, each at most once ("5m5m" and
# "30s1m" passed a looser pattern here and failed later in promtool, as a traceback)
PROMETHEUS_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")


@dataclass(frozen=True)
class AlertThresholds:
    """Thresholds and windows of the alert rules (see README "Alerts")."""

    model_name: str = "asl"  # the Triton model clients call (the ensemble)
    triton_job: str = "triton"  # Prometheus job scraping Triton's metrics endpoint
    window: str = "5m"  # rate window for latency / errors / confidence
    latency_p95_ms: float = 250.0
    latency_for: str = "5m"
    error_ratio: float = 0.05
    error_for: str = "5m"
    no_traffic_window: str = "15m"
    no_traffic_min_requests: float = 1.0
    no_traffic_for: str = "5m"
    not_ready_for: str = "1m"
    min_mean_confidence: float = 0.6
    max_low_confidence_ratio: float = 0.3
    min_confidence_samples: float = 20.0
    confidence_for: str = "10m"
    max_confidence_drop: float = 0.15  # vs the baseline's validation mean confidence
    drift_window: str = "1h"
    drift_max_tvd: float = 0.3  # total variation distance, 0 (same) .. 1 (disjoint)
    drift_min_predictions: float = 200.0
    drift_for: str = "15m"
    # hand pipeline: share of checked images where a hand was found (camera/lighting drift)
    hand_window: str = "30m"
    min_hand_found_ratio: float = 0.6
    hand_min_checked: float = 100.0  # checked images in hand_window before the ratio is judged
    hand_for: str = "10m"
    # prediction rows holding NaN/Inf (the metrics step leaves them out of every other metric)
    nonfinite_window: str = "15m"
    max_nonfinite_predictions: float = 0.0  # rows tolerated per nonfinite_window
    nonfinite_for: str = "0s"
    # tritonserver restarts by the launcher (a crash each: in-flight requests lost, 502s meanwhile)
    restart_window: str = "1h"
    max_server_restarts: float = 0.0  # restarts tolerated per restart_window

    def validate(self) -> "AlertThresholds":
        """Reject values Prometheus would reject later with a less helpful message."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_for", "window")) and not _is_duration(str(value)):
                raise ValueError(f"{f.name}={value!r} is not a Prometheus duration (e.g. 30s, 5m)")
            if f.name.endswith("window") and not re.search(r"[1-9]", str(value)):
                raise ValueError(f"{f.name}={value!r} must be longer than 0 (a range of rates)")
            if f.type == "float" and not math.isfinite(float(value)):
                # NaN compares false with everything: the alert would silently never fire
                raise ValueError(f"{f.name}={value!r} must be a finite number")
            if f.type == "float" and float(value) < 0:
                raise ValueError(f"{f.name}={value!r} must be >= 0")
        if not re.match(r"^[A-Za-z0-9_.-]+$", self.model_name):
            raise ValueError(f"model_name={self.model_name!r} has characters unsafe in PromQL")
        if not re.match(r"^[A-Za-z0-9_.-]+$", self.triton_job):
            raise ValueError(f"triton_job={self.triton_job!r} has characters unsafe in PromQL")
        ratios = (
            "error_ratio",
            "max_low_confidence_ratio",
            "drift_max_tvd",
            "min_hand_found_ratio",
        )
        for name in ratios:
            if float(getattr(self, name)) > 1:
                raise ValueError(f"{name} is a ratio and must be <= 1")
        return self

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_duration(text: str) -> bool:
    return bool(text) and PROMETHEUS_DURATION.match(text) is not None


def env_name(field_name: str) -> str:
    """Env var overriding a threshold (``latency_p95_ms`` -> ``ASL_ALERT_LATENCY_P95_MS``)."""
    return ENV_PREFIX + field_name.upper()


def _coerce(field_name: str, value: Any) -> Any:
    types = {f.name: f.type for f in fields(AlertThresholds)}
    if field_name not in types:
        known = ", ".join(sorted(types))
        raise KeyError(f"unknown threshold {field_name!r}; known: {known}")
    if types[field_name] == "float":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{field_name}={value!r} is not a number") from None
    return str(value)


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml  # only needed for YAML threshold files

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:  # not a ValueError: it had ended the CLI in a traceback
            raise ValueError(f"{path}: not YAML ({exc.__class__.__name__})") from None
    data = data.get("thresholds", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):  # also "thresholds:" left empty, or a list under it
        raise ValueError(f"{path}: expected a mapping of threshold names to values")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["latency_p95_ms=300", ...]`` (the CLI's repeated ``--set``) -> dict."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class ThresholdOptions:
    """``--thresholds FILE`` and repeatable ``--set NAME=VALUE``: every monitoring CLI's base."""

    thresholds: str | None = option(None, "YAML/JSON file of threshold overrides", metavar="FILE")
    set: list[str] = option(
        [],
        "override one threshold, e.g. --set latency_p95_ms=300 (repeatable)",
        metavar="NAME=VALUE",
    )

    def threshold_overrides(self) -> dict[str, Any]:
        """The ``--set`` values by name; a CLI with its own threshold flags adds them here."""
        return dict(parse_overrides(self.set))

    def alert_thresholds(self) -> AlertThresholds:
        """Defaults < ``--thresholds`` file < ``ASL_ALERT_*`` env < ``--set`` (and own flags)."""
        return load_thresholds(self.thresholds, self.threshold_overrides())


O = TypeVar("O", bound=ThresholdOptions)


def parse_cli(
    cls: type[O], argv: Sequence[str] | None, prog: str, description: str
) -> tuple[O, AlertThresholds]:
    """A monitoring CLI's options and thresholds; a bad value ends it with one usage line."""
    parser = build_parser(cls, description)
    parser.prog = prog
    try:
        options = from_mapping(cls, vars(parser.parse_args(argv)))
        return options, options.alert_thresholds()
    except KeyError as exc:
        parser.error(exc.args[0])
    except (OSError, ValueError) as exc:  # OptionError is a ValueError
        parser.error(str(exc))


def load_thresholds(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> AlertThresholds:
    """Defaults, then the file, then ``ASL_ALERT_*`` env vars, then ``overrides``."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if path:
        values.update(_read_file(Path(path)))
    for f in fields(AlertThresholds):
        if env_name(f.name) in env:
            values[f.name] = env[env_name(f.name)]
    values.update(overrides or {})
    coerced = {key: _coerce(key, value) for key, value in values.items()}
    return AlertThresholds(**coerced).validate()

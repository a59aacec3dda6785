"""The status page's HTML: one autoescaped Jinja2 template (``templates/status.html``, its CSS
in ``templates/status.css``) and the views it renders (figures, tiles, alerts, confusion matrix).

Every figure degrades to "—" when missing and "n/a" when not a finite number; only the
sparkline filter returns markup, built from numbers alone. A :class:`Snapshot` is one status
rendered once (page, JSON, confusion image), so requests between refreshes cost no rendering.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from asl_recognition.registry.base import ModelRecord
from asl_recognition.registry.confusion import read_classes

from .prometheus_api import finite
from .urls import mask_url

NO_CONFUSION: dict[str, Any] = {"matrix": None, "split": None, "png": None}
MAX_PNG = 16 * 1024 * 1024  # bytes of the confusion matrix image kept and served

METRIC_ORDER = (
    "val_accuracy",
    "val_macro_f1",
    "test_accuracy",
    "test_macro_f1",
    "external_accuracy",
    "external_macro_f1",
)


def model_summary(record: ModelRecord | None) -> dict[str, Any] | None:
    """The model card; metrics that are not a mapping (a hand-edited record) are left out."""
    if record is None:
        return None
    metrics = dict(record.metrics) if isinstance(record.metrics, Mapping) else {}
    scalar = {
        k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    ordered = {k: scalar[k] for k in METRIC_ORDER if k in scalar}
    ordered.update({k: v for k, v in sorted(scalar.items()) if k not in ordered})
    tags = getattr(record, "tags", None)
    return {
        "id": record.id,
        "name": record.name,
        "version": record.version,
        "created": getattr(record, "created", ""),
        "tags": [str(t) for t in tags] if isinstance(tags, (list, tuple)) else [],
        "dataset_id": getattr(record, "dataset_id", None),
        "task_id": getattr(record, "task_id", None),
        "classes": read_classes(record),
        "metrics": ordered,
        "baseline": bool(getattr(record, "baseline_path", None)),
    }


def num(value: Any, digits: int = 2, unit: str = "", pct: bool = False) -> str:
    """A figure for the page: "—" when missing, "n/a" when not a finite number."""
    if value is None:
        return "—"
    number = finite(value)
    if number is None:
        return "n/a"
    return f"{number * 100:.1f}%" if pct else f"{number:.{digits}f}{unit}"


def sparkline(values: list[float | None], width: int = 260, height: int = 40) -> Markup:
    """An inline SVG polyline; markup built from numbers only, so it needs no escaping."""
    points = [(i, v) for i, v in enumerate(values) if finite(v) is not None]
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
    if finite(value) is None:
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
        total = sum(v for v in row if finite(v) is not None) or 1.0
        cells = [_cell(j, value, total) for j, value in enumerate(row)]
        gaps += sum(c["cls"] == "gap" for c in cells)
        rows.append({"label": name, "cells": cells})
    return {"split": conf.get("split"), "labels": labels, "rows": rows, "gaps": gaps}


def _alerts_view(live: Mapping[str, Any]) -> list[dict[str, str]]:
    """Firing alerts first, then pending, each by name; fields the template shows."""
    shown = []
    for a in live.get("alerts") or []:
        if not isinstance(a, Mapping) or a.get("state") not in ("firing", "pending"):
            continue
        labels, notes = a.get("labels"), a.get("annotations")
        labels = labels if isinstance(labels, Mapping) else {}
        notes = notes if isinstance(notes, Mapping) else {}
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
                "GAVE UP serving (its /healthz says why): restart it"
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
    """The HTML page from :meth:`.dashboard.StatusSource.collect`'s dict (autoescaped template)."""
    model, live = status["model"], status["live"]
    shares = sorted((live.get("class_shares") or {}).items(), key=lambda kv: -kv[1])[:10]
    return (
        _templates()
        .get_template("status.html")
        .render(
            refresh=int(refresh),
            prometheus=status["prometheus"],
            updated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status.get("updated"))),
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
        return finite(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value if value is None or isinstance(value, (str, int, bool)) else str(value)


@dataclass(frozen=True)
class Snapshot:
    """One collection, rendered once: every request until the next refresh gets these bytes."""

    html: str | None
    body: bytes
    error: str | None = None
    png: bytes | None = None
    taken: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, collect: Callable[[], dict[str, Any]]) -> "Snapshot":
        """Collected and rendered; a failure is the snapshot's ``error`` (served as a 500)."""
        try:
            status = collect()
            path = (status.get("confusion") or {}).get("png")
            png = None
            if path and Path(path).is_file() and Path(path).stat().st_size <= MAX_PNG:
                png = Path(path).read_bytes()
            body = json.dumps(json_safe(status), allow_nan=False).encode()
            return cls(render_page(status), body, png=png)
        except Exception as exc:  # noqa: BLE001 - answered as one line, never a hang-up
            error = f"status page error: {type(exc).__name__}: {exc}".replace("\n", " ")
            return cls(None, b"null", error)


def loading(prometheus: str, window: str) -> Snapshot:
    """What a request gets when the first refresh has not ended and it may not wait for it."""
    note = "still loading: the first refresh has not ended yet"
    return Snapshot.of(
        lambda: {
            "model": None, "model_error": note, "confusion": NO_CONFUSION,
            "live": {"error": note}, "window": window,
            "prometheus": mask_url(prometheus), "updated": time.time(),
        }
    )  # fmt: skip

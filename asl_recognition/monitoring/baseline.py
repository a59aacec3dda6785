"""The drift baseline stored with each model: training class shares + validation confidence.

Written by training (``baseline.json`` next to the model); read defensively here because it is a
file contract between two stages: counts or shares, missing parts, and extra keys are all accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

_CLASS_KEYS = ("class_distribution", "train_class_distribution", "class_shares", "class_counts")
_HIST_KEYS = ("confidence_histogram", "val_confidence_histogram")
_MEAN_KEYS = ("mean_confidence", "val_mean_confidence", "confidence_mean")


@dataclass(frozen=True)
class Baseline:
    """Class shares sum to 1; ``confidence_mean`` is None when the file has no confidence part."""

    class_shares: dict[str, float] = field(default_factory=dict)
    confidence_mean: float | None = None
    source: str = ""


def _normalise(dist: Mapping[str, Any]) -> dict[str, float]:
    clean = {str(k): float(v) for k, v in dist.items() if isinstance(v, (int, float)) and v >= 0}
    total = sum(clean.values())
    if total <= 0:
        return {}
    return {k: v / total for k, v in clean.items()}


def histogram_mean(buckets: list[float], counts: list[float]) -> float | None:
    """Histogram mean from upper bucket edges and bucket midpoints (first lower edge = 0)."""
    if not buckets or len(buckets) != len(counts):
        return None
    total = float(sum(counts))
    if total <= 0:
        return None
    acc, lower = 0.0, 0.0
    for upper, count in zip(buckets, counts):
        acc += (lower + float(upper)) / 2.0 * float(count)
        lower = float(upper)
    return acc / total


def _first(data: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in data and data[key] is not None:
            return data[key]
    return None


def parse_baseline(data: Mapping[str, Any], source: str = "") -> Baseline:
    """Build a :class:`Baseline` from the JSON object (also nested ``{"baseline": {...}}``)."""
    if isinstance(data.get("baseline"), Mapping):
        data = data["baseline"]
    dist = _first(data, _CLASS_KEYS)
    shares = _normalise(dist) if isinstance(dist, Mapping) else {}
    buckets: list[float] = []
    counts: list[float] = []
    hist = _first(data, _HIST_KEYS)
    if isinstance(hist, Mapping):
        raw_b, raw_c = hist.get("buckets") or hist.get("edges") or [], hist.get("counts") or []
        try:
            buckets = [float(b) for b in raw_b]
            counts = [float(c) for c in raw_c]
        except (TypeError, ValueError):
            buckets, counts = [], []
        if len(buckets) == len(counts) + 1:  # edges incl. the lower bound 0
            buckets = buckets[1:]
    mean = _first(data, _MEAN_KEYS)
    if not isinstance(mean, (int, float)):
        mean = histogram_mean(buckets, counts)
    return Baseline(
        class_shares=shares,
        confidence_mean=None if mean is None else float(mean),
        source=source,
    )


def load_baseline(path: str | Path) -> Baseline:
    """Read ``baseline.json``; raises ``ValueError`` on a file that is not a JSON object."""
    path = Path(path)
    data = json.loads(path.read_text())
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: baseline must be a JSON object")
    return parse_baseline(data, source=str(path))


def uniform_baseline(classes: list[str]) -> Baseline:
    """A balanced training set's class shares; used for the checked-in Docker-path rules."""
    return Baseline(class_shares={c: 1.0 / len(classes) for c in classes}, source="uniform")

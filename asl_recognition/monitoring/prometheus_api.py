"""The few Prometheus HTTP API calls the status page makes: instant and range queries, alerts.

A small stdlib client rather than a library: ``prometheus-api-client`` (0.7.2) brings requests,
dateparser and a retrying session, and has no call for ``/api/v1/alerts``; the page needs four
GET requests with a timeout, and basic-auth credentials kept off the page.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from typing import Any, Mapping

from .urls import mask_url, split_credentials


class PromClient:
    """Prometheus HTTP API; credentials in the URL go into a header and never onto the page."""

    def __init__(self, base_url: str, timeout: float = 3.0) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            # Not echoed: without "http://", "user:pass@host" reads as scheme "user".
            raise ValueError("the Prometheus URL must start with http:// or https://")
        bare, self._auth = split_credentials(base_url)
        self.base_url = bare.rstrip("/")
        self.display_url = mask_url(base_url)
        self.timeout = timeout

    def _get(self, path: str, params: Mapping[str, Any]) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url)
        if self._auth:
            request.add_header("Authorization", self._auth)
        with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(body.get("error", "query failed"))
        return body["data"]

    def scalar(self, expr: str) -> float | None:
        """First sample's value, or None when the result is empty / NaN / infinite."""
        result = self._get("/api/v1/query", {"query": expr})["result"]
        return finite(float(result[0]["value"][1])) if result else None

    def vector(self, expr: str, label: str) -> dict[str, float]:
        """Label value -> sample value, non-finite samples left out."""
        result = self._get("/api/v1/query", {"query": expr})["result"]
        values = {r["metric"].get(label, ""): finite(float(r["value"][1])) for r in result}
        return {k: v for k, v in values.items() if v is not None}

    def series(self, expr: str, minutes: int = 15, points: int = 180) -> list[float | None]:
        end = time.time()
        step = max(1, int(minutes * 60 / points))
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": end - minutes * 60, "end": end, "step": step},
        )["result"]
        return [finite(float(v)) for _, v in data[0]["values"]] if data else []

    def alerts(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/alerts", {})["alerts"]


def finite(value: Any) -> float | None:
    """``value`` as a float, or None for missing, NaN, infinite or non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None

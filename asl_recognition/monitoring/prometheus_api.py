"""The few Prometheus HTTP API calls the status page makes: instant and range queries, alerts.

A small stdlib client rather than a library: ``prometheus-api-client`` (0.7.2) brings requests,
dateparser and a retrying session, and has no call for ``/api/v1/alerts``; the page needs four
GET requests with a timeout, and basic-auth credentials kept off the page.

What one Prometheus may cost the page is bounded: all the reads of one refresh share one deadline
(a server trickling a byte at a time had held a read open forever, as each byte restarted the
per-read timeout), an answer is read up to :data:`MAX_BODY` bytes only (50 MB answers had taken
490 MB), and an answer of the wrong shape is a :class:`MalformedAnswer`, never a ``TypeError``.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from typing import Any, Mapping

from .urls import mask_url, split_credentials

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)


def _keeps_credentials(old: str, new: str) -> bool:
    """The same scheme, host and port (a default port written or not), or the same host moved
    from http to https on the default ports: what requests and httpx keep the header for."""
    before, after = _origin(old), _origin(new)
    upgrade = before == ("http", after[1], 80) and after == ("https", after[1], 443)
    return before == after or upgrade


class _CredentialsStayHome(urllib.request.HTTPRedirectHandler):
    """urllib copies every header onto a redirect, ``Authorization`` too, to any host: a
    Prometheus (or the proxy before it) redirecting elsewhere was sent the basic-auth password.
    Kept only for the same origin or its http -> https upgrade, as requests and httpx do."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0913
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not _keeps_credentials(req.full_url, newurl):
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_CredentialsStayHome)
MAX_BODY = 4 * 1024 * 1024  # bytes of one answer; the page's biggest (class shares) is a few KB
CHUNK = 64 * 1024


class MalformedAnswer(ValueError):
    """Prometheus answered, but not with what its API documents (or more than MAX_BODY)."""


class PromClient:
    """Prometheus HTTP API; credentials in the URL go into a header and never onto the page.

    ``deadline`` (a :func:`time.monotonic` time) ends every read of this client: a request
    started or a chunk received after it raises ``TimeoutError``.
    """

    def __init__(self, base_url: str, timeout: float = 3.0, deadline: float | None = None) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            # Not echoed: without "http://", "user:pass@host" reads as scheme "user".
            raise ValueError("the Prometheus URL must start with http:// or https://")
        bare, self._auth = split_credentials(base_url)
        self.base_url = bare.rstrip("/")
        self.display_url = mask_url(base_url)
        self.timeout = timeout
        self.deadline = deadline

    def _left(self) -> float:
        """Seconds this read may still wait: the per-read timeout, cut to the deadline."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete answer before the page's refresh deadline")
        return min(self.timeout, left)

    def _read(self, resp: Any) -> bytes:
        """The body, chunk by chunk (each recv returns, so the deadline is checked between
        them), refused past :data:`MAX_BODY`, by its ``Content-Length`` or as it arrives."""
        length = resp.headers.get("Content-Length")
        if length and length.strip().isdigit() and int(length) > MAX_BODY:
            raise MalformedAnswer(f"an answer of {int(length)} bytes, over {MAX_BODY}")
        body = bytearray()
        while chunk := resp.read1(CHUNK):
            body += chunk
            if len(body) > MAX_BODY:
                raise MalformedAnswer(f"an answer over {MAX_BODY} bytes")
            self._left()
        return bytes(body)

    def _get(self, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url)
        if self._auth:
            request.add_header("Authorization", self._auth)
        with _OPENER.open(request, timeout=self._left()) as resp:  # noqa: S310
            raw = self._read(resp)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise MalformedAnswer(f"not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise MalformedAnswer(f"a JSON {type(body).__name__}, not an object")
        if body.get("status") != "success":
            raise RuntimeError(str(body.get("error", "query failed"))[:300])
        data = body.get("data")
        if not isinstance(data, dict):
            raise MalformedAnswer("no data object in a successful answer")
        return data

    def _result(self, path: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The samples of a query: each an object with a ``metric`` object."""
        result = self._get(path, params).get("result")
        if not isinstance(result, list) or not all(
            isinstance(r, dict) and isinstance(r.get("metric", {}), dict) for r in result
        ):
            raise MalformedAnswer("its result is not a list of samples")
        return result

    def scalar(self, expr: str) -> float | None:
        """First sample's value, or None when the result is empty / NaN / infinite."""
        result = self._result("/api/v1/query", {"query": expr})
        return sample(result[0].get("value")) if result else None

    def vector(self, expr: str, label: str) -> dict[str, float]:
        """Label value -> sample value, non-finite samples left out."""
        result = self._result("/api/v1/query", {"query": expr})
        values = {str(r.get("metric", {}).get(label, "")): sample(r.get("value")) for r in result}
        return {k: v for k, v in values.items() if v is not None}

    def series(self, expr: str, minutes: int = 15, points: int = 180) -> list[float | None]:
        """One range query's values, oldest first (the page's sparklines)."""
        end = time.time()
        step = max(1, int(minutes * 60 / points))
        data = self._result(
            "/api/v1/query_range",
            {"query": expr, "start": end - minutes * 60, "end": end, "step": step},
        )
        values = data[0].get("values") if data else []
        if not isinstance(values, list):
            raise MalformedAnswer("a range result without a list of values")
        return [sample(v) for v in values]

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's alerts (objects only: anything else in the list is left out)."""
        alerts = self._get("/api/v1/alerts", {}).get("alerts")
        if not isinstance(alerts, list):
            raise MalformedAnswer("no list of alerts")
        return [a for a in alerts if isinstance(a, dict)]


def sample(pair: Any) -> float | None:
    """The value of a ``[time, "value"]`` pair, None when not a finite number."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise MalformedAnswer("a sample that is not a [time, value] pair")
    try:
        return finite(float(pair[1]))
    except (TypeError, ValueError):
        return None


def finite(value: Any) -> float | None:
    """``value`` as a float, or None for missing, NaN, infinite or non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None

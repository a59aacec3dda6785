"""Status page for people who run the model (``make dashboard``): its data and its routes.

The page (one autoescaped Jinja2 template) is built by :mod:`.status_page` and Prometheus is read
through :mod:`.prometheus_api`; no JS needed. It is served at ``/status`` by the live page's web
app (:mod:`asl_recognition.web`), so one server with one set of limits serves both pages.

Shows the production model (version, classes, metrics, confusion matrix) from the registry, live
request rate / latency / confidence / drift / hands found / non-finite rows from Prometheus with
the alert rules' expressions (:mod:`.promql`), and the firing alerts. Every section degrades to a
clear message when its source is missing, slow, answers nonsense, or holds NaN ("n/a").

No request waits on a source: a snapshot is computed at most once per ``refresh`` seconds, in a
daemon thread, whatever the number of requests (:class:`StatusCache`), and each source is read in a
daemon thread of its own, left behind at the refresh's deadline (a ClearML SDK retrying an
unreachable server 240 times, a trickling Prometheus): before, 40 requests took every slot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import option
from asl_recognition.registry.confusion import find_confusion

from .alert_rules import GAVE_UP
from .prometheus_api import PromClient
from .promql import PromQL
from .settings import AlertThresholds, ThresholdOptions
from .status_page import NO_CONFUSION, Snapshot, loading, model_summary


# ---------------------------------------------------------------- registry side
def _production_beside_unreadable(registry: Any, error: Exception) -> tuple[Any, str]:
    """The local registry's production model when another record cannot be read: each record
    read on its own (``list`` reads them all, so one truncated record had hidden production),
    the tagged one of highest version then read and checked by the registry itself."""
    from asl_recognition.registry import PRODUCTION_TAG

    tagged, unreadable = [], []
    for path in sorted(Path(registry.records).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["name"] == "asl" and PRODUCTION_TAG in data["tags"]:
                tagged.append((int(data["version"]), str(data.get("created", "")), path.stem))
        except (OSError, ValueError, TypeError, KeyError):
            unreadable.append(path.name)
    if not unreadable:
        raise error
    note = f"registry: unreadable record(s) skipped: {', '.join(unreadable)} ({error})"
    return (registry.get(max(tagged)[2]) if tagged else None), note


def _load_registry_production(backend: str) -> tuple[Any | None, str | None]:
    """(record, error) for the production model; error explains why there is none."""
    try:
        from asl_recognition.registry import ModelIntegrityError, get_registry
    except ImportError as exc:
        return None, f"model registry not available ({exc})"
    try:
        registry = get_registry(backend)
        try:
            return registry.production(), None
        except ModelIntegrityError as exc:
            if not hasattr(registry, "records"):  # the local registry's folder of records
                raise
            return _production_beside_unreadable(registry, exc)
    except Exception as exc:  # noqa: BLE001 - the page must render whatever the registry does
        return None, f"registry error: {type(exc).__name__}: {exc}"


def registry_section(backend: str) -> dict[str, Any]:
    """The model card and its confusion matrix; a record of odd shape is an error here only."""
    record, error = _load_registry_production(backend)
    try:
        model = model_summary(record)
    except Exception as exc:  # noqa: BLE001 - a record of any shape: this section says so
        return {"model": None, "model_error": f"unreadable production record: {exc!r}"}
    try:
        confusion = find_confusion(record) if record else NO_CONFUSION
    except Exception:  # noqa: BLE001 - the card without its matrix
        confusion = NO_CONFUSION
    return {"model": model, "model_error": error, "confusion": confusion}


# ---------------------------------------------------------------- Prometheus side
def live_queries(q: PromQL) -> dict[str, str]:
    """The page's figures, from the expressions the alert rules use."""
    return {
        "up": q.up,
        "request_rate": q.request_rate,
        "error_ratio": q.error_ratio,
        "latency_p95_ms": q.latency_p95_ms,
        "latency_mean_ms": q.latency_mean_ms,
        "confidence_mean": q.confidence_mean,
        "low_confidence_ratio": q.low_confidence_ratio,
        "drift_tvd": q.drift_tvd,
        "hand_found_ratio": q.hand_found_ratio,
        "hands_checked": q.hands_checked(),
        "nonfinite_predictions": q.nonfinite_predictions(),
        "server_gave_up": f"max({GAVE_UP})",
    }


def live_status(prom: PromClient, q: PromQL) -> dict[str, Any]:
    """The live section; any failure (down, slow, malformed) is its ``error`` sentence."""
    exprs = live_queries(q)
    try:
        values = {name: prom.scalar(expr) for name, expr in exprs.items()}
        shares = prom.vector(q.class_counts(), "class")
        history = {
            "request_rate": prom.series(exprs["request_rate"]),
            "confidence_mean": prom.series(exprs["confidence_mean"]),
        }
        alerts = prom.alerts()
    except Exception as exc:  # noqa: BLE001 - down, slow or malformed: this section says so
        reason = f"{type(exc).__name__}: {exc}".replace(prom.base_url, prom.display_url)
        return {"error": f"Prometheus unreachable at {prom.display_url} ({reason})"}
    total = sum(shares.values())
    return {
        "values": values,
        "class_shares": {k: v / total for k, v in shares.items() if v > 0} if total > 0 else {},
        "history": history,
        "alerts": alerts,
        "windows": {"hands": q.hand_window, "nonfinite": q.nonfinite_window},
        "error": None,
    }


MAX_LEFT_BEHIND = 3  # reads of one source stuck in a trickling answer, left running
READ_LIMIT = 3  # refreshes a Prometheus read may take: a late one is shown next time


class _Read:
    """One source's read in a daemon thread: waited for until a deadline, then left behind
    (never joined, so shutdown does not wait on it either)."""

    def __init__(self, name: str, read: Callable[[], dict[str, Any]]) -> None:
        self.done, self.value, self.started = threading.Event(), None, time.monotonic()
        self.finished = self.started
        self.thread = threading.Thread(target=self._run, args=(read,), name=name, daemon=True)
        self.thread.start()

    def _run(self, read: Callable[[], dict[str, Any]]) -> None:
        try:
            self.value = read()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter, never lost
            self.value = exc
        finally:
            self.finished = time.monotonic()
            self.done.set()


# ---------------------------------------------------------------- one snapshot
@dataclass
class StatusSource:
    """Where the page's data comes from; the queries are the alert rules' (same job, model).
    ``refresh``: seconds a snapshot is served, and the most one refresh may take."""

    prometheus: str = "http://127.0.0.1:9090"
    registry_backend: str = "auto"
    queries: PromQL = field(default_factory=PromQL)
    refresh: float = 5.0
    _reads: dict[str, _Read] = field(default_factory=dict, init=False, repr=False, compare=False)
    _last: dict[str, tuple] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def _start(self, name: str, read: Callable[[], dict[str, Any]]) -> _Read:
        """A new read of ``name``, or its previous one while that runs and is not stuck (past
        its own deadline: then left behind, at most MAX_LEFT_BEHIND per source, so a trickling
        answer does not hide a recovered source). A read that ended late is kept as the last."""
        with self._lock:
            running, thread = self._reads.get(name), f"asl-status-{name}"
            if running is not None and running.done.is_set() and isinstance(running.value, dict):
                self._last[name] = (running.finished, running.value)
            started = running.started if running is not None else time.monotonic()
            stuck = time.monotonic() - started > (READ_LIMIT + 1) * self.refresh
            alive = sum(t.name == thread for t in threading.enumerate())
            if running is None or running.done.is_set() or (stuck and alive < MAX_LEFT_BEHIND):
                running = self._reads[name] = _Read(thread, read)
            return running

    def collect(self) -> dict[str, Any]:
        """One snapshot: registry and Prometheus read at once, for at most ``refresh`` s."""
        deadline = time.monotonic() + self.refresh  # a slower read is shown at the next one
        prom = PromClient(self.prometheus, deadline=deadline + READ_LIMIT * self.refresh)
        reads = {
            "registry": self._start("registry", lambda: registry_section(self.registry_backend)),
            "live": self._start("live", lambda: {"live": live_status(prom, self.queries)}),
        }
        status: dict[str, Any] = {"confusion": NO_CONFUSION}
        for name, read in reads.items():
            read.done.wait(max(0.0, deadline - time.monotonic()))
            value = read.value if read.done.is_set() else None
            if isinstance(value, dict):
                self._last[name] = (time.monotonic(), value)
            elif name in self._last:  # slow but working: its last answer, marked late
                taken, last = self._last[name]
                value = {**last, "late_s": round(time.monotonic() - taken)}
            if not isinstance(value, dict):  # late, or an error the section did not catch
                waited = f"no answer in {time.monotonic() - read.started:.0f} s"
                why = waited if value is None else f"{type(value).__name__}: {value}"
                value = (
                    {"model": None, "model_error": f"registry unreachable: {why}"}
                    if name == "registry"
                    else {
                        "live": {"error": f"Prometheus unreachable at {prom.display_url} ({why})"}
                    }
                )
            status.update(value)
        status.update(window=self.queries.window, prometheus=prom.display_url, updated=time.time())
        return status

    @classmethod
    def from_options(cls, options: "DashboardOptions", t: AlertThresholds) -> "StatusSource":
        return cls(options.prometheus, options.registry_backend, PromQL.from_thresholds(t))


class StatusCache:
    """The newest snapshot, refreshed once it is ``source.refresh`` s old by one daemon thread
    (concurrent requests share it). At most ``waiters`` requests wait for a refresh, each at
    most ``wait`` s (the first refresh: until its deadline, so the first page is a real one);
    the others, and those after waiting, get the newest snapshot there is, or "still loading"."""

    def __init__(self, source: StatusSource, wait: float = 1.0, waiters: int = 4) -> None:
        self.source, self.wait, self.waiters = source, wait, waiters
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._loading: Snapshot | None = None
        self._refreshing: threading.Event | None = None
        self._waiting = 0

    def newest(self) -> Snapshot:
        """The newest snapshot, or "still loading", without waiting."""
        if self._snapshot is not None:
            return self._snapshot
        if self._loading is None:
            self._loading = loading(self.source.prometheus, self.source.queries.window)
        return self._loading

    def _refresh(self, done: threading.Event) -> None:
        snapshot = None
        try:  # bounded: collect leaves slow reads behind at its deadline
            snapshot = Snapshot.of(self.source.collect)
        finally:
            with self._lock:
                self._snapshot, self._refreshing = snapshot or self._snapshot, None
            done.set()

    def _due(self) -> threading.Event | None:
        """The refresh to wait for (started here if none runs), None when not due or when
        enough requests wait already."""
        with self._lock:
            fresh = (
                self._snapshot and time.monotonic() - self._snapshot.taken < self.source.refresh
            )
            if fresh:
                return None
            if self._refreshing is None:  # set once started: a failed start must not stick
                done, name = threading.Event(), "asl-status-refresh"
                threading.Thread(
                    target=self._refresh, args=(done,), name=name, daemon=True
                ).start()
                self._refreshing = done
            if self._waiting >= self.waiters:
                return None
            self._waiting += 1
            return self._refreshing

    async def current(self, gone: Callable[[], Awaitable[bool]] | None = None) -> Snapshot:
        """The snapshot to serve now: fresh, or refreshed within ``wait`` s, or the newest;
        a request whose client ``gone`` stops waiting at once (its slot goes to another)."""
        done = self._due()
        if done is not None:
            try:
                old = self._snapshot is None or self._snapshot.taken < time.monotonic() - 2 * (
                    self.source.refresh
                )  # the first, or one from before a quiet spell: the whole refresh is awaited
                end = time.monotonic() + (self.source.refresh + 1.0 if old else self.wait)
                while not done.is_set() and time.monotonic() < end:
                    if gone is not None and await gone():
                        break
                    await asyncio.sleep(0.02)
            finally:
                with self._lock:
                    self._waiting -= 1
        return self.newest()


# ---------------------------------------------------------------- routes on the web app
# The page has no script; its stylesheet and the confusion cells' colours are inline.
STATUS_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "cache-control": "no-store",
}


def status_routes(source: StatusSource) -> list[Route]:
    """``/status`` (the page), ``/api/status`` (JSON), ``/status/confusion.png`` and
    ``/status/healthz`` (200 only when the page renders), for the web app's ``routes``. Async
    and served from :class:`StatusCache`: no request holds a thread or waits on a source."""
    cache = StatusCache(source)

    def failed(snapshot: Snapshot, status: int = 500) -> Response:
        return PlainTextResponse(f"{snapshot.error}\n", status, headers=STATUS_HEADERS)

    async def page(request: Request) -> Response:
        snapshot = await cache.current(request.is_disconnected)
        if snapshot.html is None:
            return failed(snapshot)
        return HTMLResponse(snapshot.html, headers=STATUS_HEADERS)

    async def status(request: Request) -> Response:
        snapshot = await cache.current(request.is_disconnected)  # strict JSON: NaN made None
        if snapshot.error:
            return failed(snapshot)
        return Response(snapshot.body, media_type="application/json", headers=STATUS_HEADERS)

    async def confusion(_request: Request) -> Response:
        png = cache.newest().png
        if png:
            return Response(png, media_type="image/png", headers=STATUS_HEADERS)
        return PlainTextResponse("no confusion matrix image\n", 404, headers=STATUS_HEADERS)

    async def healthz(request: Request) -> Response:
        snapshot = await cache.current(request.is_disconnected)
        if snapshot.error:
            return PlainTextResponse(f"not ok: {snapshot.error}\n", 503, headers=STATUS_HEADERS)
        return PlainTextResponse("ok\n", headers=STATUS_HEADERS)

    views = {"/status": page, "/api/status": status, "/status/healthz": healthz}
    views["/status/confusion.png"] = confusion
    return [Route(path, view, methods=["GET"]) for path, view in views.items()]


PROG = "python -m asl_recognition.monitoring.dashboard"
DESCRIPTION = (
    "Serve the ASL model status page. Model, Prometheus job and window default to the alert "
    "thresholds (--thresholds FILE, ASL_ALERT_* env vars, --set NAME=VALUE), so the page reads "
    "what the alert rules judge."
)


@dataclass(frozen=True)
class DashboardOptions(ThresholdOptions):
    """The status page's own options (the web app's options add them to its own);
    ``--model-name``/``--window`` override the thresholds."""

    prometheus: str = option(
        "http://127.0.0.1:9090",
        "Prometheus base URL; http://USER:PASS@HOST:PORT for basic auth (shown masked)",
    )
    model_name: str | None = option(None, "Triton model clients call (default: model_name, asl)")
    window: str | None = option(None, "rate window for live figures (default: window, 5m)")
    registry_backend: str = option(
        "auto", "where the production model is read", choices=("auto", "local", "clearml")
    )

    def threshold_overrides(self) -> dict[str, Any]:
        chosen = {"model_name": self.model_name, "window": self.window}
        own = {name: value for name, value in chosen.items() if value is not None}
        return {**super().threshold_overrides(), **own}


def build_parser() -> argparse.ArgumentParser:
    """The command line: the web app's options, the status page's among them."""
    from asl_recognition.web.options import WebOptions

    parser = build_options_parser(WebOptions, DESCRIPTION)
    parser.prog = PROG
    return parser


def main(argv: list[str] | None = None) -> int:
    """``make dashboard``: the web app (live page on ``/``, status page on ``/status``)."""
    from asl_recognition.web.server import main as serve_web

    return serve_web(argv, PROG, DESCRIPTION, status_first=True)


if __name__ == "__main__":
    sys.exit(main())

"""The public HTTP front of the local Triton server: body cap, per-client rate, bounded time.

Triton 2.51 takes any request body whole (a 1 GB POST ends as 3.9 GB of RSS and a 1.9 GB
``/dev/shm`` region that stays until restart) and has no option to cap it, so Triton listens on
loopback only and this app, on the public port, forwards ``/v2/...`` to it:

- a body over ``max_body_bytes`` gets 413 before it is read (by ``Content-Length``) or as soon as
  the streamed (chunked) body passes the cap; the bodies being buffered are capped as a whole
  (``max_buffered_bytes``, 503 beyond it), so the front's own memory is bounded too;
- each client (by address) has a token bucket: past ``rate`` requests/s (``burst`` at once) it
  gets 429 with ``Retry-After`` at once, nothing queues, and so does one more than
  ``requests_in_flight`` at once;
- reading the body and Triton's answer share ``request_timeout`` seconds (408 for a body not
  received in time, 504 for an answer not given in time); a client that stops reading its
  answers has as long again to take them, then its connection is reset; headers are due within
  ``header_timeout``, and one address holds at most ``client_connections`` connections
  (:class:`~asl_recognition.serving.limits.HeaderDeadline`); the client is the socket's peer,
  never an ``X-Forwarded-For`` header;
- only the inference API is forwarded (404 for Triton's admin API: shared memory, logging,
  model control), and an inference request whose JSON would crash Triton is refused (400)
  (:mod:`asl_recognition.serving.front_checks`).

Refusals are JSON ``{"error": "..."}`` like Triton's own, so ``tritonclient`` shows the sentence.
``/healthz`` says whether Triton is ready (or why not: the launcher gave up); ``/metrics`` is the
front's and the launcher's Prometheus text (refusals by reason, restarts, gave-up flag).
Built as a Starlette app so more routes (a web page) can join it; the live page's app
(:mod:`asl_recognition.web.app`) refuses with the same :class:`Refused`, :func:`read_capped` and
:func:`rate_limit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asl_recognition.options import option
from asl_recognition.serving.front_checks import (
    HEADER_LENGTH,
    check_encoding,
    check_infer_json,
    check_route,
    json_part,
)
from asl_recognition.serving.limits import (
    MIB,
    InFlight,
    Refused,
    TokenBuckets,
    client_of,
    header_deadline,
    rate_limit,
    read_capped,
)

# httpx logs every forwarded request at INFO; the launcher's log is for the server's life.
logging.getLogger("httpx").setLevel(logging.WARNING)
# Headers that describe one hop, not the message (RFC 9110 7.6.1), plus those httpx sets itself.
HOP_HEADERS = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        "content-encoding",  # a request's can only be identity (check_encoding)
    )
)


@dataclass
class FrontLimits:
    """What one request and one client may cost the server behind the front."""

    max_body_bytes: int = option(
        32 * MIB, "largest request body in bytes (one 25 MB photo fits); larger: 413", low=1
    )
    max_buffered_bytes: int = option(
        256 * MIB, "request bodies held at once by the front, all clients; beyond: 503", low=1
    )
    rate: float = option(
        10.0, "requests per second per client address (0: no limit); beyond: 429", low=0.0
    )
    burst: int = option(20, "requests a client may send at once before the rate applies", low=1)
    request_timeout: float = option(
        30.0,
        "seconds to receive a body and get Triton's answer (408/504 beyond), and for a client "
        "to take an answer it stops reading (then the connection is reset)",
        low=0.1,
    )
    trusted_proxies: list[str] = option(
        [],
        "addresses of reverse proxies whose X-Forwarded-For names the client (empty: the "
        "connection's own address is the client, as any other header can be forged)",
        metavar="ADDRESS",
    )
    requests_in_flight: int = option(
        4,
        "requests one client address may have in flight at once (0: no cap); more: 429 (one "
        "photo may hold the hand step for seconds, so the rate alone let a client queue minutes)",
        low=0,
    )
    max_connections: int = option(
        64, "connections and requests the front serves at once; beyond: 503", low=1
    )
    client_connections: int = option(
        48,
        "connections one client address may hold open (0: no cap); more are closed at once",
        low=0,
    )
    header_timeout: float = option(
        10.0,
        "seconds for a request's line and headers to arrive; beyond: connection closed",
        low=0.1,
    )


@dataclass
class ServerState:
    """What the launcher tells the front (and its /metrics) about the server behind it."""

    restarts: Callable[[], int] = lambda: 0
    gave_up: str | None = None  # the sentence saying why, once the launcher stopped trying
    refused: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)


class Proxy:
    """Forwards one request to Triton's HTTP endpoint within the limits."""

    def __init__(self, upstream: str, limits: FrontLimits, state: ServerState) -> None:
        self.upstream, self.limits, self.state = upstream.rstrip("/"), limits, state
        self.buckets = TokenBuckets(limits.rate, limits.burst)
        self.in_flight = InFlight(limits.requests_in_flight)
        self.buffered = 0
        self.client: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:  # created in the server's event loop
            self.client = httpx.AsyncClient(
                base_url=self.upstream,
                timeout=httpx.Timeout(self.limits.request_timeout),
                limits=httpx.Limits(max_connections=self.limits.max_connections),
            )
        return self.client

    async def read_body(self, request: Request, budget: list[int]) -> bytes:
        """The body, refused with 413 past the cap; ``budget[0]``: the bytes it holds."""

        def hold(size: int) -> None:
            budget[0] += size
            self.buffered += size
            if self.buffered > self.limits.max_buffered_bytes:
                raise Refused(503, "busy", "the server is busy (too many large requests); retry")

        return await read_capped(request, self.limits.max_body_bytes, on_chunk=hold)

    async def forward(self, request: Request) -> Response:
        rate_limit(self.buckets, request)
        check_route(request.method, request.url.path)
        check_encoding(request.headers.get("content-encoding"))
        if self.state.gave_up:
            raise Refused(503, "gave_up", self.state.gave_up)
        budget = [0, 0]  # bytes held, body received
        try:
            with self.in_flight.hold(client_of(request)):
                return await asyncio.wait_for(
                    self._exchange(request, budget), self.limits.request_timeout
                )
        except asyncio.TimeoutError:
            late = "tritonserver did not answer" if budget[1] else "the body did not arrive"
            raise Refused(
                504 if budget[1] else 408, "timeout",
                f"{late} within {self.limits.request_timeout:g} s",
            ) from None  # fmt: skip
        finally:
            self.buffered -= budget[0]

    async def _exchange(self, request: Request, budget: list[int]) -> Response:
        body = await self.read_body(request, budget)
        if request.method == "POST" and request.url.path.endswith("/infer"):
            document = json_part(body, request.headers.getlist(HEADER_LENGTH))
            await asyncio.to_thread(check_infer_json, document)  # a regex pass, off the loop
        budget[1] = 1  # received: a timeout from here on is Triton's
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        try:
            answer = await self._client().request(
                request.method,
                request.url.path,
                params=request.url.query or None,
                content=body,
                headers=headers,
            )
        except httpx.TimeoutException:
            raise asyncio.TimeoutError from None
        except httpx.TransportError as exc:
            raise Refused(
                502, "upstream_unavailable",
                f"tritonserver is not answering ({type(exc).__name__}); it may be restarting",
            ) from None  # fmt: skip
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
        kept.pop("content-encoding", None)  # httpx has decoded the body already
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    async def handle(self, request: Request) -> Response:
        try:
            response = await self.forward(request)
        except Refused as exc:
            self.state.refused[exc.reason] += 1
            response = exc.response()
        except ClientDisconnect:
            self.state.refused["client_gone"] += 1
            return Response(status_code=400)
        self.state.answered[str(response.status_code)] += 1
        return response

    async def ready(self) -> bool:
        try:
            answer = await self._client().get("/v2/health/ready", timeout=2.0)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def metrics_text(state: ServerState) -> str:
    """Prometheus text of the front and the launcher (``asl_server_gave_up`` for the alert)."""
    lines = [
        "# HELP asl_server_gave_up 1 once the launcher stopped restarting tritonserver",
        "# TYPE asl_server_gave_up gauge",
        f"asl_server_gave_up {1 if state.gave_up else 0}",
        "# HELP asl_server_restarts_total tritonserver restarts by the launcher",
        "# TYPE asl_server_restarts_total counter",
        f"asl_server_restarts_total {state.restarts()}",
        "# HELP asl_front_refused_total requests the front refused, by reason",
        "# TYPE asl_front_refused_total counter",
    ]
    lines += [f'asl_front_refused_total{{reason="{r}"}} {n}' for r, n in state.refused.items()]
    lines += ["# TYPE asl_front_responses_total counter"]
    lines += [f'asl_front_responses_total{{code="{c}"}} {n}' for c, n in state.answered.items()]
    return "\n".join(lines) + "\n"


def create_app(upstream: str, limits: FrontLimits, state: ServerState | None = None) -> Starlette:
    """The front app: ``/v2/...`` forwarded to ``upstream`` (Triton HTTP), health, metrics."""
    state = state if state is not None else ServerState()
    proxy = Proxy(upstream, limits, state)

    async def healthz(_request: Request) -> Response:
        if state.gave_up:
            return PlainTextResponse(f"not ok: {state.gave_up}\n", status_code=503)
        if await proxy.ready():
            return PlainTextResponse("ok\n")
        return PlainTextResponse("not ok: tritonserver is not ready\n", status_code=503)

    async def metrics(_request: Request) -> Response:
        return PlainTextResponse(metrics_text(state), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v2", proxy.handle, methods=["GET", "POST"]),
        Route("/v2/{path:path}", proxy.handle, methods=["GET", "POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.front = state
    return app


class FrontServer:
    """The app served by uvicorn in a background thread (the launcher's loop keeps the main)."""

    def __init__(self, app: Starlette, host: str, port: int, limits: FrontLimits) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            limit_concurrency=limits.max_connections,
            http=header_deadline(  # the web app's options have no header_timeout
                getattr(limits, "header_timeout", FrontLimits.header_timeout),
                limits.request_timeout,  # also the time a client may leave an answer unread
                limits.client_connections,
                limits.trusted_proxies,  # many clients each: not held to one's connections
            ),
            # the client is the socket's peer unless it is a trusted proxy: uvicorn's default
            # took X-Forwarded-For from any loopback peer, so a local client named a new
            # address per request past its limits
            proxy_headers=bool(limits.trusted_proxies),
            forwarded_allow_ips=list(limits.trusted_proxies) or None,
            timeout_keep_alive=5,
            h11_max_incomplete_event_size=64 * 1024,  # request line + headers
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.host, self.port = host, port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "FrontServer":
        """Serve in a thread; return once listening, raise (one line) if it cannot bind."""
        self._thread = threading.Thread(target=self.server.run, name="asl-front", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the front cannot listen on {self.host}:{self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.should_exit = True
            self._thread.join(10)
            self._thread = None


@dataclass
class FrontCommand(FrontLimits):
    """Serve the front alone, before a Triton HTTP endpoint (the compose ``front`` service)."""

    upstream: str = option("http://127.0.0.1:8000", "Triton's HTTP endpoint (loopback or private)")
    host: str = option("127.0.0.1", "address the front listens on")
    port: int = option(8000, "port the front listens on", low=1, high=65535)


def main(argv: list[str] | None = None) -> int:
    """``python -m asl_recognition.serving.front``: until SIGTERM/Ctrl-C (uvicorn handles both)."""
    from asl_recognition.options import parse

    command = parse(FrontCommand, argv, FrontCommand.__doc__ or "")  # its limits are FrontLimits
    front = FrontServer(create_app(command.upstream, command), command.host, command.port, command)
    print(f"front on http://{command.host}:{command.port} -> {command.upstream}", flush=True)
    front.server.run()  # main thread: uvicorn installs its own signal handlers
    return 0


__all__ = ["FrontLimits", "FrontServer", "ServerState", "create_app"]

if __name__ == "__main__":
    raise SystemExit(main())

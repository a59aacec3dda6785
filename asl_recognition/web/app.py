"""The live recognition page's web app: the page, its static files and ``POST /api/frame``.

Each frame (a webcam JPEG or a chosen photo, the bytes as they are) is checked here and then
sent to the Triton ensemble over gRPC (:mod:`.triton_link`). What one client may cost is bounded
before Triton sees anything, and every refusal is JSON ``{"error": "..."}`` with its status:

- a body over ``max_frame_bytes``: 413 (by ``Content-Length`` before reading, or as soon as a
  streamed body passes the cap; the connection is then closed); a ``Content-Length`` that is
  not a size: 400 (the front's :func:`~asl_recognition.serving.limits.read_capped`);
- more than ``rate`` frames/s from one address (``burst`` at once), or more than
  ``frames_in_flight`` of its frames at once: 429 with ``Retry-After``, nothing queues;
- bytes that are not an image (read from the header, no pixel decoded): 415; an image that
  decodes to more than ``max_frame_pixels`` (read from the header too): 413;
- a POST whose ``Origin`` is not this page's own (another site's script): 403. No response
  carries ``Access-Control-*`` headers, so browsers never let another origin read an answer;
- a ``Host`` header not naming this server (another site's name resolved to loopback, DNS
  rebinding, which makes its script same-origin): 400 (``allowed_hosts`` adds names);
- Triton not answering: 503 with ``"triton": "down"`` (the page says so and keeps trying);
  no answer within ``request_timeout``: 504; a frame not received within it either: 408;
  a photo Triton refuses: 422 with its sentence (once the model, read again, is unchanged);
  Triton failing on a frame through no fault of its own (a dead backend stub): 502;
  an answer the page cannot show (NaN, landmarks of another shape): 502 with its sentence;
  a ``--model`` that does not take photo bytes: 503 with the sentence saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from asl_recognition import imageio
from asl_recognition.serving.limits import (
    InFlight,
    Refused,
    TokenBuckets,
    client_of,
    rate_limit,
    read_capped,
)

from .options import PageOptions, WebLimits, WebOptions
from .triton_link import (
    AnswerUnusable,
    FrameRefused,
    ModelUnfit,
    TritonDown,
    TritonFailed,
    TritonLink,
)

# The page runs only its own script, styles and images; nothing may frame it.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
}


def same_origin(request: Request) -> bool:
    """No ``Origin`` (curl, the bench) or this very host: the only callers allowed to POST."""
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == request.headers.get("host")


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k.encode() not in names
                ]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


class FrameHandler:
    """``POST /api/frame``: limits, the image check, then Triton."""

    def __init__(self, link: TritonLink, limits: WebLimits) -> None:
        self.link, self.limits = link, limits
        self.buckets = TokenBuckets(limits.rate, limits.burst)
        self.in_flight = InFlight(limits.frames_in_flight, "frames")  # received or answered

    def check_client(self, request: Request) -> None:
        if not same_origin(request):
            refusal = "cross-origin requests are refused: open the page itself"
            raise Refused(403, "cross_origin", refusal)
        rate_limit(self.buckets, request, "frames")

    def check_image(self, photo: bytes) -> None:
        """The header alone says whether this is an image the hand step can decode: a format
        the project does not read, a bomb, or truncated or corrupt bytes are the client's 415
        (``imageio`` turns every parse failure into an ``ImageDecodeError``), never a 500.
        Pixels cost the hand step (40 MP took 4 s and 1 GB of Triton's one instance, from a
        1.6 KB WebP), so a picture of more than ``max_frame_pixels`` as decoded there: 413. A
        progressive JPEG's full-size coefficients (about 1.5 to 3 samples a pixel) are held to
        ``imageio``'s own bound by ``read_header``, so a 12 MP progressive phone photo fits."""
        try:
            header = imageio.read_header(photo)
        except imageio.ImageDecodeError as exc:
            raise Refused(
                415, "not_image", f"not an image the model can read ({exc.reason}): {exc.detail}"
            ) from None
        with header:
            (width, height), decoded = header.size, imageio.decoded_size(header)
        cap, pixels = self.limits.max_frame_pixels, decoded[0] * decoded[1]
        if pixels > cap:
            raise Refused(
                413, "too_many_pixels",
                f"the image is {width}x{height} and decodes to {pixels} pixels; the limit is "
                f"{cap} ({cap / 1e6:g} MP): send it scaled down",
            )  # fmt: skip

    async def answer(self, request: Request) -> dict:
        """The frame's answer, or :class:`Refused`; counted in flight while it is worked on."""
        self.check_client(request)
        with self.in_flight.hold(client_of(request)):
            return await self._answer(request)

    async def _answer(self, request: Request) -> dict:
        timeout = self.limits.request_timeout
        try:  # the header deadline ends with the headers: a trickled body would hold its slot
            photo = await asyncio.wait_for(
                read_capped(request, self.limits.max_frame_bytes, "the frame"), timeout
            )
        except asyncio.TimeoutError:
            refusal = f"the frame was not received within {timeout:g} s"
            raise Refused(408, "timeout", refusal, {"Connection": "close"}) from None
        # in a worker thread: a header is read in milliseconds, but no client's bytes
        # should ever hold the event loop that serves the others
        await asyncio.to_thread(self.check_image, photo)
        start = time.perf_counter()
        try:
            answer = await asyncio.wait_for(self.link.classify(photo), self.limits.request_timeout)
        except TritonDown as exc:
            raise Refused(503, "triton_down", str(exc), body={"triton": "down"}) from None
        except ModelUnfit as exc:
            raise Refused(503, "model_unfit", str(exc)) from None
        except asyncio.TimeoutError:
            raise Refused(504, "timeout", f"Triton did not answer in {timeout:g} s") from None
        except FrameRefused as exc:
            raise Refused(422, "frame_refused", f"the model refused the frame: {exc}") from None
        except AnswerUnusable as exc:
            raise Refused(502, "bad_answer", str(exc)) from None
        except TritonFailed as exc:
            raise Refused(502, "triton_failed", str(exc)) from None
        answer["server_ms"] = round((time.perf_counter() - start) * 1000, 1)
        return answer

    async def handle(self, request: Request) -> Response:
        try:
            return JSONResponse(await self.answer(request))
        except Refused as exc:
            return exc.response()
        except ClientDisconnect:
            return Response(status_code=400)


def page_config(options: PageOptions) -> dict:
    return {k: v for k, v in asdict(options).items() if k in PageOptions.__dataclass_fields__}


def create_app(options: WebOptions, routes: list | None = None) -> Starlette:
    """The app: ``/`` the page, ``/static``, ``/api/frame|config|health``, ``/healthz``;
    ``routes`` (the status page) join it under the same limits and headers."""
    link = TritonLink(options.triton, options.model, timeout=options.request_timeout)
    frames = FrameHandler(link, options)
    templates = Environment(
        loader=PackageLoader("asl_recognition.web", "templates"), autoescape=select_autoescape()
    )
    config = page_config(options)
    config["max_frame_bytes"] = options.max_frame_bytes

    async def page(_request: Request) -> Response:
        html = templates.get_template("index.html").render(model=options.model, config=config)
        return HTMLResponse(html)

    async def api_config(_request: Request) -> Response:
        return JSONResponse(config)

    async def health(_request: Request) -> Response:
        ok, message = await link.ready()
        body = {"triton": "ready" if ok else "down", "message": message}
        return JSONResponse(body, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await link.close()

    app = Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/api/config", api_config, methods=["GET"]),
            Route("/api/health", health, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/api/frame", frames.handle, methods=["POST"]),
            Mount("/static", StaticFiles(packages=[("asl_recognition.web", "static")])),
            *(routes or []),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=known_hosts(options))
    app.add_middleware(SecurityHeaders)  # outermost: on the Host refusals too
    return app


def known_hosts(options: WebOptions) -> list[str]:
    """The names a ``Host`` header may give (an IPv6 address in brackets, as Starlette reads
    it): another name is a browser sent here by DNS rebinding, whose script the same-origin
    check would take for the page's own."""
    hosts = [options.host, "localhost", "127.0.0.1", "::1", *options.allowed_hosts]
    return hosts + [f"[{h}]" for h in hosts if ":" in h]


__all__ = ["create_app", "known_hosts", "same_origin"]

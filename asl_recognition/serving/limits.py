"""What one request and one client may cost a web app here, shared by the front and the live
page's app: a body read up to a cap (400/413), per-client token buckets and requests in flight
(429), a deadline on
each request's headers and a cap on each client's connections (:class:`HeaderDeadline`) and the
one refusal type both answer with, as JSON ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import math
import socket
import struct
import termios
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

MIB = 1024 * 1024


class TokenBuckets:
    """One token bucket per client key; the least recently seen are dropped past ``capacity``."""

    def __init__(self, rate: float, burst: int, capacity: int = 10_000) -> None:
        self.rate, self.burst, self.capacity = rate, burst, capacity
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when the request may go, else the seconds until a token is back."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)
        return wait


class InFlight:
    """Requests being worked on, by client: one more than ``most`` gets 429 at once (0: no cap).

    The rate alone let one client queue minutes of work: each photo may cost the hand step
    seconds, and a request carries several."""

    def __init__(self, most: int, what: str = "requests") -> None:
        self.most, self.what = most, what
        self.counts: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """Count ``client``'s request in flight while the block runs, or refuse it."""
        held = self.counts[client]
        if self.most and held >= self.most:
            raise Refused(
                429, "in_flight",
                f"{client} has {held} {self.what} in flight already, the most one client may "
                "have: send the next once one is answered", {"Retry-After": "1"},
            )  # fmt: skip
        self.counts[client] += 1
        try:
            yield
        finally:
            self.counts[client] -= 1
            if not self.counts[client]:
                del self.counts[client]


class Refused(Exception):
    """A request answered here without going further: status, one sentence, a reason (the
    metrics' key), extra headers and extra JSON fields beside ``error``."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        headers: dict[str, str] | None = None,
        body: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason
        self.headers, self.body = dict(headers or {}), dict(body or {})

    def response(self) -> JSONResponse:
        """``{"error": ..., **body}``; after a 413 the connection ends (the rest is not read)."""
        response = error(self.status, str(self), self.headers, self.body)
        if self.status == 413:
            response.headers["Connection"] = "close"
        return response


def error(
    status: int, message: str, headers: dict[str, str] | None = None, body: dict | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, **(body or {})}, status_code=status, headers=headers)


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limit(buckets: TokenBuckets, request: Request, what: str = "requests") -> None:
    """429 with ``Retry-After`` once the client's bucket is empty: nothing queues."""
    client = client_of(request)
    wait = buckets.take(client)
    if wait > 0:
        retry = str(max(1, math.ceil(wait)))
        raise Refused(
            429, "rate_limited",
            f"too many {what} from {client}: at most {buckets.rate:g}/s "
            f"(burst {buckets.burst}); retry in {retry} s", {"Retry-After": retry},
        )  # fmt: skip


async def read_capped(
    request: Request,
    cap: int,
    what: str = "request body",
    on_chunk: Callable[[int], None] | None = None,
) -> bytes:
    """The body, or 400 for a ``Content-Length`` that is not a size, 413 past ``cap`` (by the
    declared length before reading, else as soon as the stream passes it). ``on_chunk(n)`` is
    told of each chunk kept and may refuse too (the front's bound on all buffered bodies)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "bad_length", f"Content-Length {declared[:20]!r} is not a size")
        if int(declared) > cap:
            raise Refused(413, "body_too_large", _too_large(what, int(declared), cap))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise Refused(413, "body_too_large", _too_large(what, size, cap, streamed=True))
        if on_chunk is not None:
            on_chunk(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(what: str, size: int, cap: int, streamed: bool = False) -> str:
    told = f"more than {cap} bytes so far" if streamed else f"{size} bytes"
    return f"{what} is {told}; the limit is {cap} bytes ({cap / MIB:g} MiB)"


class CountingTransport:
    """A transport that counts the bytes written into it: with what it still holds, how much
    a slow client has taken (its buffer refills as uvicorn streams, so its size alone is no
    measure)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport, self.written = transport, 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeaderDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on each request's headers and on each write.

    uvicorn 0.54 has none (its keep-alive timer starts after a response and stops at the next
    byte), so 64 sockets that never finish their headers held every connection slot and others
    got 503 for as long as they stayed open. Armed on connect and after each response; a new
    request's parsed headers disarm it, its body has ``request_timeout``.

    A client that sends requests and never reads the answers held its slot for ever too:
    uvicorn's send waits for the write buffer to drain with no deadline, and ``close()`` waits
    for it to empty. So once writing pauses (the buffer over its high-water mark), or the header
    deadline passes with answers unsent, the buffer is looked at every ``write_timeout`` seconds
    until it is empty: the connection is reset when none of it went out in that time. A slow
    client that keeps reading gets its whole answer.

    The deadlines bound each connection, not how many one client opens: a client reconnecting
    as each was closed held every slot all the same. So one address may hold at most
    ``client_connections`` (0: no cap); a connection past that is closed at once, unread.
    A trusted proxy's connections (``proxies``) carry many clients and are not counted so: with
    ``--trusted-proxies`` set as the docs ask, every user behind it had shared one address's
    connections, the next ones closed unread (a 502 from the proxy); they are under the
    server's own ``max_connections``, and each user under its request limits by the header.
    """

    header_timeout = 10.0
    write_timeout = 30.0
    client_connections = 0
    proxies: tuple[str, ...] = ()
    open_by_client: Counter[str] = Counter()  # each server's own (:func:`header_deadline`)

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self._headers_due: asyncio.TimerHandle | None = None
        self._write_due: asyncio.TimerHandle | None = None
        self._sent_then = 0  # what had gone out when the write deadline was last armed
        super().connection_made(CountingTransport(transport))
        peer = self.client[0] if self.client else None
        # None, not counted: a Unix socket, or a trusted proxy (many clients)
        self._peer = None if peer is None or is_proxy(peer, self.proxies) else peer
        if self._peer is not None:
            self.open_by_client[self._peer] += 1
            if 0 < self.client_connections < self.open_by_client[self._peer]:
                self.transport.close()
                return
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._headers_due = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def _headers_late(self) -> None:
        self._headers_due = None
        if self.transport.get_write_buffer_size():  # an answer going out: is it being taken?
            self._stop_write_deadline()  # looked at within the header deadline from now on
            self._watch_write(self.header_timeout)
        elif not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers were parsed
            self._disarm()

    def on_response_complete(self) -> None:
        """Arm the next request's deadline, unless that request already started in super()
        (pipelined: its headers were waiting) or the connection ends with nothing left to send.
        """
        cycle = self.cycle
        super().on_response_complete()
        if self.cycle is not cycle:
            return  # armed now, the deadline would cut that request while Triton answers it
        if not self.transport.is_closing() or self.transport.get_write_buffer_size():
            self._arm()

    def pause_writing(self) -> None:
        """The client takes the answer slowly, if at all: watched until it is all sent."""
        super().pause_writing()
        self._watch_write(self.write_timeout)

    def _sent(self) -> int:
        """Bytes the client has taken so far: written, less what the transport still holds and
        what waits in the kernel's send queue (``SIOCOUTQ``; megabytes, which a client reading
        slowly drains long before the transport may write again)."""
        queued = 0
        sock = self.transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError, ValueError):
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        return self.transport.written - self.transport.get_write_buffer_size() - queued

    def _watch_write(self, period: float) -> None:
        """Every ``period`` s while answers are unsent: cut when none of it went out."""
        if self._write_due is None:
            self._sent_then = self._sent()
            self._write_due = self.loop.call_later(period, self._write_late, period)

    def _stop_write_deadline(self) -> None:
        if self._write_due is not None:
            self._write_due.cancel()
            self._write_due = None

    def _write_late(self, period: float) -> None:
        self._write_due = None
        if not self.transport.get_write_buffer_size():
            return
        if self._sent() > self._sent_then:
            self._watch_write(period)  # a slow reader still reading: another period
        else:
            self._cut()  # connection_lost() then wakes the send waiting on drain()

    def _cut(self) -> None:
        """Drop what the client did not take. A reset (``SO_LINGER`` 0), not a FIN behind the
        unsent bytes: those would stay in the kernel's buffer, megabytes per such client."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._stop_write_deadline()
        if self._peer is not None:
            self.open_by_client[self._peer] -= 1
            if self.open_by_client[self._peer] <= 0:
                del self.open_by_client[self._peer]
        super().connection_lost(exc)


def is_proxy(peer: str, proxies: Sequence[str]) -> bool:
    """``peer`` is one of ``proxies`` (addresses, networks or ``*``, as uvicorn's
    ``forwarded_allow_ips`` reads them)."""
    for entry in proxies:
        if entry == "*":
            return True
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(peer) in ipaddress.ip_network(entry, strict=False):
                return True
    return False


def header_deadline(
    seconds: float,
    write_seconds: float = 30.0,
    client_connections: int = 0,
    proxies: Sequence[str] = (),
) -> type[HeaderDeadline]:
    """:class:`HeaderDeadline` with ``seconds`` for headers, ``write_seconds`` for a paused
    write and at most ``client_connections`` per client address but ``proxies`` (uvicorn takes
    a protocol class, not values; each server gets its own count of open connections)."""
    return type(
        "HeaderDeadline",
        (HeaderDeadline,),
        {
            "header_timeout": seconds,
            "write_timeout": write_seconds,
            "client_connections": client_connections,
            "proxies": tuple(proxies),
            "open_by_client": Counter(),
        },
    )

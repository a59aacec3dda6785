"""A local Alertmanager webhook receiver: stores every notification; used by the end-to-end test.

``python -m asl_recognition.monitoring.webhook --port 9099`` also prints a one-line summary of
each notification, handy to watch alerts without Slack/Telegram/SMTP credentials.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import option, parse

MAX_BODY = 1 << 20
KEPT_NOTIFICATIONS = 1000  # the newest; a receiver left running must not grow without end
READ_TIMEOUT_S = 10.0  # a connection that sends nothing for this long is closed
DESCRIPTION = "Print Alertmanager webhook notifications."


@dataclass(frozen=True)
class WebhookOptions:
    """Where the printing receiver listens."""

    host: str = option("127.0.0.1", "listen address")
    port: int = option(9099, "listen port (0: any free port)", low=0, high=65535)


class WebhookReceiver:
    """HTTP server collecting Alertmanager payloads; on any free loopback port by default."""

    def __init__(self, options: WebhookOptions | None = None, echo: bool = False) -> None:
        listen = options or WebhookOptions(port=0)
        self.notifications: deque[dict[str, Any]] = deque(maxlen=KEPT_NOTIFICATIONS)
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = READ_TIMEOUT_S

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if kind != "application/json":  # Alertmanager's; a page of any origin could
                    self.send_error(415, "application/json only")  # send text/plain unasked
                    return
                text = (self.headers.get("Content-Length") or "").strip()
                if not text.isdigit():  # "-1" had read to the end of the stream, unbounded
                    self.send_error(411, "a Content-Length of bytes is needed")
                    return
                if int(text) > MAX_BODY:
                    self.send_error(413)
                    return
                body = read_body(self.rfile, self.connection, int(text))
                if body is None:
                    self.close_connection = True  # trickled past the deadline: no answer owed
                    return
                payload, problem = parse_notification(body)
                if problem:
                    self.send_error(400, problem)
                    return
                receiver._add(payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.echo = echo
        self.server = ThreadingHTTPServer((listen.host, listen.port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/alerts"

    def _add(self, payload: dict[str, Any]) -> None:
        payload = {**payload, "_received": time.time()}
        with self._cond:
            self.notifications.append(payload)
            self._cond.notify_all()
        if self.echo:
            print(summarise(payload), flush=True)

    def events(self) -> list[tuple[str, str]]:
        """(alertname, status) for every alert in every notification so far, in arrival order."""
        with self._cond:
            return [
                (a.get("labels", {}).get("alertname", "?"), a.get("status", "?"))
                for n in self.notifications
                for a in n.get("alerts", [])
            ]

    def wait_for(self, predicate: Callable[[list[tuple[str, str]]], bool], timeout: float) -> bool:
        """Block until ``predicate(self.events())`` holds or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(self.events()):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 0.5))

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def read_body(rfile: Any, sock: socket.socket, length: int) -> bytes | None:
    """``length`` bytes, or None when they take over READ_TIMEOUT_S in all: each byte had
    restarted the socket's timeout, so a body trickled a byte at a time held its thread."""
    deadline, body = time.monotonic() + READ_TIMEOUT_S, bytearray()
    try:
        while len(body) < length:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = rfile.read1(min(65536, length - len(body)))
            if not chunk or time.monotonic() > deadline:
                return None
            body += chunk
    except OSError:  # socket.timeout included
        return None
    return bytes(body)


def parse_notification(body: bytes) -> tuple[dict[str, Any], str | None]:
    """An Alertmanager notification (a JSON object whose ``alerts`` are objects), or why not:
    anything else had been stored, and later broke :func:`summarise` and :meth:`events`."""
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, nesting past Python's stack
        return {}, "body is not JSON"
    if not isinstance(payload, dict):
        return {}, "body is not a JSON object"
    alerts = payload.get("alerts", [])
    if not isinstance(alerts, list) or not all(
        isinstance(a, dict) and isinstance(a.get("labels", {}), dict) for a in alerts
    ):
        return {}, "alerts is not a list of objects with labels"
    return payload, None


def _shown(value: Any) -> str:
    """``value`` for a terminal: control characters escaped (an ESC or a CR in a label had
    rewritten the terminal's lines, e.g. a forged "resolved")."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(value))


def summarise(payload: dict[str, Any]) -> str:
    alerts = ", ".join(
        f"{_shown(a.get('labels', {}).get('alertname', '?'))}={_shown(a.get('status', '?'))}"
        for a in payload.get("alerts", [])
    )
    return f"[webhook] {_shown(payload.get('status', '?'))}: {alerts}"


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`WebhookOptions` (also for the README table)."""
    return build_options_parser(WebhookOptions, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    options = parse(WebhookOptions, argv, DESCRIPTION)
    receiver = WebhookReceiver(options, echo=True)
    print(f"listening on {receiver.url} (set ALERT_WEBHOOK_URL to it); Ctrl-C stops", flush=True)
    try:
        receiver.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

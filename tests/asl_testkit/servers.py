"""Real servers on loopback for a test: a local Triton, a tiny HTTP stub, background traffic."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable


def start_server(repo: Path, log_dir: Path, **kwargs):
    """A real local tritonserver on free ports, ready; its own log file under ``log_dir``."""
    import tempfile

    from asl_recognition.serving.triton_server import TritonServer

    log_dir.mkdir(parents=True, exist_ok=True)
    log = Path(tempfile.mkstemp(prefix="triton-", suffix=".log", dir=log_dir)[1])
    return TritonServer.on_free_ports(repo, log_path=log, **kwargs).start_ready(90)


class BackgroundLoop:
    """``tick()`` every ``period`` seconds in a daemon thread while inside ``with``: traffic."""

    period = 0.1

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the loop used (a client), after the thread ended."""

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.tick()

    def __enter__(self) -> "BackgroundLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.close()


Respond = Callable[[BaseHTTPRequestHandler], tuple[int, str, bytes]]


@contextlib.contextmanager
def threaded_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a free loopback port in threads; its ``http://`` URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class LoopbackServer:
    """A real HTTP server on a free loopback port; ``respond(request)`` answers every GET with
    (status, content type, body). Stubs of Prometheus's API and Triton's metrics are built on it.
    """

    def __init__(self, respond: Respond) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                status, content_type, body = respond(self)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ipv6_loopback() -> bool:
    """Whether this machine can listen on ``::1`` (some containers have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True

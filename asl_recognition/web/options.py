"""The options of the web app (``python -m asl_recognition.web``), declared once: the live
page's limits and behaviour, and the status page's own options (:class:`DashboardOptions`),
which the app serves at ``/status``. Frozen like the monitoring options they compose."""

from __future__ import annotations

from dataclasses import dataclass

from asl_recognition.monitoring.dashboard import DashboardOptions
from asl_recognition.options import option

MIB = 1024 * 1024


@dataclass(frozen=True)
class WebLimits:
    """What one frame and one client may cost the app and Triton behind it."""

    max_frame_bytes: int = option(
        8 * MIB, "largest frame or photo in bytes (a phone photo fits); larger: 413", low=1
    )
    max_frame_pixels: int = option(
        16_000_000,
        "most pixels a frame may decode to, read from its header (a 12 MP phone photo fits; a "
        "JPEG counts as the hand step decodes it); more: 413",
        low=1,
    )
    frames_in_flight: int = option(
        2, "frames one client address may have in flight at once (two tabs); more: 429", low=1
    )
    rate: float = option(
        15.0, "frames per second per client address (0: no limit); beyond: 429", low=0.0
    )
    burst: int = option(30, "frames a client may send at once before the rate applies", low=1)
    request_timeout: float = option(
        10.0,
        "seconds to receive a frame, and again for Triton's answer (408/504 beyond), and for a "
        "client to take an answer it stops reading (then the connection is reset)",
        low=0.1,
    )
    trusted_proxies: list[str] = option(
        [],
        "addresses of reverse proxies whose X-Forwarded-For names the client (empty: the "
        "connection's own address is the client, as any other header can be forged)",
        metavar="ADDRESS",
    )
    max_connections: int = option(
        32, "connections and requests the app serves at once; beyond: 503", low=1
    )
    client_connections: int = option(
        8,
        "connections one client address may hold open (0: no cap); more are closed at once",
        low=0,
    )


@dataclass(frozen=True)
class PageOptions:
    """What the page itself does (sent to the browser as /api/config)."""

    hold_ms: int = option(
        1000, "ms a letter must stay the top answer before it joins the spelled line", low=100
    )
    frame_interval_ms: int = option(
        200, "ms between webcam frames sent (at most one frame in flight)", low=20
    )
    jpeg_quality: float = option(0.9, "JPEG quality of the webcam frames", low=0.1, high=1.0)
    max_side: int = option(
        480, "webcam frames are scaled down to this longest side before sending", low=64
    )
    min_probability: float = option(
        0.5, "a letter below this probability does not count towards the hold", low=0.0, high=1.0
    )


@dataclass(frozen=True)
class WebOptions(WebLimits, PageOptions, DashboardOptions):
    """Serve the live recognition page (frames to Triton over gRPC) and the status page."""

    triton: str = option("127.0.0.1:8001", "Triton's gRPC endpoint HOST:PORT")
    model: str = option("asl", "served ensemble the frames go to (photo bytes in)")
    host: str = option(
        "127.0.0.1", "address the app listens on (loopback; 0.0.0.0 only behind a proxy)"
    )
    port: int = option(8080, "port the app listens on", low=1, high=65535)
    allowed_hosts: list[str] = option(
        [],
        "host names the app answers to besides --host, localhost, 127.0.0.1 and ::1 (a reverse "
        "proxy's public name); another Host header: 400",
        metavar="NAME",
    )

    def __post_init__(self) -> None:
        """Refuse a page that would send faster than the app lets one client send: every
        frame beyond the rate came back 429 and the page stalled on them."""
        page_rate = 1000.0 / self.frame_interval_ms
        if self.rate and page_rate > self.rate:
            raise ValueError(
                f"--frame-interval-ms {self.frame_interval_ms} sends up to {page_rate:.1f} "
                f"frames/s, over --rate {self.rate:g}: the page's own frames would be refused "
                "(429); raise --rate or the interval"
            )


__all__ = ["PageOptions", "WebLimits", "WebOptions"]

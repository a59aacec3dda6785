"""The local Alertmanager webhook receiver under bad requests: each gets an HTTP answer, none
is stored, and neither a body nor an idle connection nor time grows its memory without end."""

from __future__ import annotations

import json
import socket
import time

import pytest

from asl_recognition.monitoring import webhook
from asl_recognition.monitoring.webhook import WebhookReceiver

GOOD = {"status": "firing", "alerts": [{"labels": {"alertname": "AslTritonDown"}, "status": "x"}]}


def raw_post(url: str, head: bytes, body: bytes = b"") -> bytes:
    """The status line of the answer to a hand-made POST (the connection closed after it)."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /alerts HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def post_json(url: str, body: bytes, kind: bytes = b"application/json") -> bytes:
    return raw_post(url, b"Content-Type: %s\r\nContent-Length: %d\r\n" % (kind, len(body)), body)


def test_only_json_is_taken_and_labels_cannot_drive_the_terminal(capsys) -> None:
    """A page of any origin may POST text/plain to 127.0.0.1 unasked (a "simple request"): it
    had been stored and echoed, ESC and CR included, so it could forge or hide lines."""
    forged = {"status": "resolved", "alerts": [
        {"labels": {"alertname": "\x1b[2K\rAslTritonDown"}, "status": "resolved"}]}  # fmt: skip
    body = json.dumps(forged).encode()
    with WebhookReceiver(echo=True) as hook:
        for kind in (b"text/plain", b"application/x-www-form-urlencoded", b""):
            assert post_json(hook.url, body, kind).split()[1] == b"415", kind
        assert not hook.notifications
        assert post_json(hook.url, body).split()[1] == b"200"
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert "[webhook] resolved: \\x1b[2K\\rAslTritonDown=resolved" in out


@pytest.mark.parametrize(
    "head, body, status",
    [
        (b"Content-Length: -1\r\n", b"{}" * 1000, b"411"),  # had read to the end, unbounded
        (b"Content-Length: abc\r\n", b"{}", b"411"),  # had dropped the connection, traceback
        (b"", b"{}", b"411"),
        (b"Content-Length: %d\r\n" % (webhook.MAX_BODY + 1), b"", b"413"),
    ],
)
def test_a_length_that_is_not_a_bounded_count_of_bytes_is_refused(head, body, status) -> None:
    with WebhookReceiver() as hook:
        json_head = b"Content-Type: application/json\r\n" + head
        assert raw_post(hook.url, json_head, body).split()[1] == status
        assert not hook.notifications


@pytest.mark.parametrize(
    "body",
    [b"[1]", b'""', b"\xff\xfe{", b"[" * 100_000, b'{"alerts": [1]}', b'{"alerts": {}}',
     b'{"alerts": [{"labels": 5}]}'],
    ids=["list", "string", "not-utf8", "deep", "alert-not-object", "alerts-not-list", "labels"],
)  # fmt: skip
def test_a_body_that_is_no_notification_gets_400_and_is_not_stored(body) -> None:
    """Each had been stored (then broke the echo and events()) or dropped the connection."""
    with WebhookReceiver(echo=True) as hook:
        assert post_json(hook.url, body).split()[1] == b"400"
        assert not hook.notifications and hook.events() == []
        assert post_json(hook.url, json.dumps(GOOD).encode()).split()[1] == b"200"
        assert hook.events() == [("AslTritonDown", "x")]


def test_an_idle_connection_is_closed_and_only_the_newest_notifications_are_kept(
    monkeypatch,
) -> None:
    monkeypatch.setattr(webhook, "READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(webhook, "KEPT_NOTIFICATIONS", 3)
    with WebhookReceiver() as hook:
        host, port = hook.server.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as idle:
            start = time.monotonic()
            assert idle.recv(1) == b""  # closed by the receiver, not by this 10 s timeout
            assert time.monotonic() - start < 5
        for n in range(5):
            payload = {**GOOD, "status": str(n)}
            assert post_json(hook.url, json.dumps(payload).encode()).split()[1] == b"200"
        assert [n["status"] for n in hook.notifications] == ["2", "3", "4"]


def test_a_trickled_body_is_cut_off_at_one_deadline_for_the_whole_body(monkeypatch) -> None:
    """Each byte had restarted READ_TIMEOUT_S: a body sent a byte every few seconds held its
    connection and thread for as long as its sender liked (1 MiB: weeks)."""
    monkeypatch.setattr(webhook, "READ_TIMEOUT_S", 1.0)
    with WebhookReceiver() as hook:
        host, port = hook.server.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as slow:
            slow.sendall(
                b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            start, answer = time.monotonic(), b""
            while time.monotonic() - start < 8 and not answer:
                time.sleep(0.5)
                try:
                    slow.sendall(b" ")
                    slow.settimeout(0.01)
                    answer = slow.recv(65536) or b"closed"
                except (socket.timeout, BlockingIOError):
                    continue
                except OSError:  # reset by the receiver: cut off too
                    answer = b"closed"
            assert answer, "a body trickled for 8 s was still being read"
            assert time.monotonic() - start < 5
        assert not hook.notifications

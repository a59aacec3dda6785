"""client.py, run as the README shows it, through the real front (``python -m
asl_recognition.serving.front``) whose per-client rate limit answers 429 with ``Retry-After``:
a folder of more photos than the burst is classified whole, the client waiting as told, never
reported as a lost server (``--dir data/test_images`` run twice in a row against ``make
serve`` exited 3, "stopped answering after 0 of 28 images"). Triton's HTTP API is played by
the threaded stand-in of the hostile-input tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from asl_testkit.servers import threaded_http
from test_client_hostile_inputs import StandIn, a_photo, run_client
from test_front_abuse import front

PHOTOS = 8


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    with threaded_http(StandIn) as url:
        yield url


def a_folder(tmp_path: Path) -> Path:
    for number in range(PHOTOS):
        (tmp_path / f"{number}.jpg").write_bytes(a_photo())
    return tmp_path


def test_a_folder_past_the_burst_waits_as_told_and_is_classified_whole(
    stand_in: str, tmp_path: Path
) -> None:
    folder = a_folder(tmp_path)
    with front(stand_in, "--rate", "4", "--burst", "2") as port:
        result = run_client("--dir", str(folder), "--url", f"127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == PHOTOS, result.stdout


def test_a_retry_after_past_the_timeout_is_not_waited_for(stand_in: str, tmp_path: Path) -> None:
    folder = a_folder(tmp_path)
    with front(stand_in, "--rate", "0.01", "--burst", "1") as port:
        started = time.monotonic()
        result = run_client("--dir", str(folder), "--url", f"127.0.0.1:{port}", "--timeout", "3")
    assert result.returncode in (3, 4), result.stderr
    assert time.monotonic() - started < 10, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

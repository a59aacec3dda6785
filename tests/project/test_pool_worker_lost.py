"""A pool worker killed mid-step (the OOM killer, ``kill -9``): real spawned processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from asl_testkit.pool_jobs import square_or_die

from asl_recognition.workers import WorkerLostError, run_pool


def test_a_worker_killed_once_loses_no_result(tmp_path: Path) -> None:
    """The unanswered jobs run again in a fresh pool; every answer comes back, in order."""
    jobs = [(str(tmp_path), i, False) for i in range(40)]
    assert run_pool(square_or_die, jobs, workers=2, progress=False) == [i * i for i in range(40)]
    assert (tmp_path / "killed").exists()  # a worker really died


def test_a_worker_that_keeps_dying_is_one_line(tmp_path: Path) -> None:
    jobs = [(str(tmp_path), i, True) for i in range(40)]
    with pytest.raises(WorkerLostError) as caught:
        run_pool(square_or_die, jobs, workers=2, desc="landmarks", progress=False)
    message = str(caught.value)
    assert message.startswith("landmarks: a worker process died twice, ") and "\n" not in message

"""bench/bench_triton.py end to end, in a very short run: every cell answered, no errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from asl_recognition.paths import REPO_ROOT

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_bench_runs_every_cell(tiny_models, tmp_path) -> None:
    a = tiny_models["a"]
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "bench/bench_triton.py", "--onnx", str(a.onnx), "--classes"]
    cmd += [str(a.classes), "--seconds", "0.3", "--concurrency", "1", "4", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    cells = {
        (r["model"].split()[0], r["dynamic_batching"], r["concurrency"]) for r in result["rows"]
    }
    assert len(cells) == 6 and {c for _, _, c in cells} == {1, 4}
    assert {d for _, d, _ in cells} == {True, False}
    for row in result["rows"]:
        assert row["errors"] == 0 and row["images"] > 0 and row["ratio_to_ort"] > 0
        assert row["p99_ms"] >= row["p50_ms"] > 0
    assert "| concurrency |" in proc.stdout.replace(
        "| dynamic batching | concurrency |", "| concurrency |"
    )


def test_hands_bench_compares_triton_with_in_process(tmp_path) -> None:
    """bench/bench_hands_triton.py in a tiny run: both sides answer every photo, ratio printed."""
    out = tmp_path / "hands.json"
    cmd = [sys.executable, "bench/bench_hands_triton.py", "--seconds", "0.5", "--rounds", "1"]
    cmd += ["--per-class", "1", "--concurrency", "1", "2", "--hand-instances", "1"]
    proc = subprocess.run(
        cmd + ["--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["concurrency"] for r in result["rows"]] == [1, 2]
    for row in result["rows"]:
        for side in ("triton", "in-process"):
            assert row[side]["errors"] == 0 and row[side]["images"] > 0
        assert row["ratio"] == row["triton"]["throughput"] / row["in-process"]["throughput"]
    assert "| concurrency | Triton img/s | in-process img/s | ratio |" in proc.stdout

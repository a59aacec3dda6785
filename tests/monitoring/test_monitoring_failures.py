"""The error ratio counts failed requests as the real tritonserver 2.51 reports them.

Every served model is an ensemble (``<name>_onnx``/``_hands`` -> ``<name>_metrics``), and
Triton 2.51 adds 2 to an ensemble's ``nv_inference_request_failure`` for each failed request
(an unreadable image, a step answering an error): read raw, 3% of failed requests showed as
5.8% and paged ``AslHighErrorRate`` at half its threshold. A tiny ensemble whose one Python
step fails on a negative input is served by the real binary; its scraped counters are then
fed to promtool, which evaluates the alert rules' own ``error_ratio`` expression on them.

The second count lands after the client has its error: triton-inference-server/core's
``src/ensemble_scheduler/ensemble_scheduler.cc`` counts the error response once
(``RespondIfError``, reason OTHER) and again in ``RequestTracker::DecrementCounter`` when the
failed step's request is released, on the callback pool. A scrape right after the last answer
read 3 for 2 failures in one CI run, so the counters are read once they have settled.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as thttp
import yaml
from asl_testkit.servers import start_server
from tritonclient.utils import InferenceServerException

from asl_recognition.monitoring.promql import PromQL
from asl_recognition.monitoring.tools import find_tool, run_tool

pytestmark = pytest.mark.server

TENSOR = "data_type: TYPE_FP32 dims: [ 1 ]"
ENSEMBLE = f"""name: "asl"
platform: "ensemble"
max_batch_size: 0
input {{ name: "X" {TENSOR} }}
output {{ name: "Y" {TENSOR} }}
ensemble_scheduling {{ step {{ model_name: "asl_step" model_version: -1
  input_map {{ key: "X" value: "X" }} output_map {{ key: "Y" value: "Y" }} }} }}
"""
STEP = f"""name: "asl_step"
backend: "python"
max_batch_size: 0
input {{ name: "X" {TENSOR} }}
output {{ name: "Y" {TENSOR} }}
instance_group {{ kind: KIND_CPU count: 1 }}
"""
STEP_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if x[0] < 0:
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative")))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
        return out
"""


def tiny_ensemble(root: Path) -> Path:
    """``asl`` -> ``asl_step`` (Python backend), the shape of every served repository."""
    repo = root / "repo"
    (repo / "asl" / "1").mkdir(parents=True)
    (repo / "asl" / "config.pbtxt").write_text(ENSEMBLE)
    (repo / "asl_step" / "1").mkdir(parents=True)
    (repo / "asl_step" / "config.pbtxt").write_text(STEP)
    (repo / "asl_step" / "1" / "model.py").write_text(STEP_MODEL)
    return repo


def send(url: str, values: list[float]) -> int:
    """One request per value; the number that failed."""
    client, failed = thttp.InferenceServerClient(url), 0
    try:
        for value in values:
            inp = thttp.InferInput("X", [1], "FP32")
            inp.set_data_from_numpy(np.array([value], dtype=np.float32))
            try:
                client.infer("asl", [inp])
            except InferenceServerException:
                failed += 1
    finally:
        client.close()
    return failed


def counters(metrics_url: str) -> dict[str, float]:
    """The ensemble's success and failure totals (failures summed over ``reason``)."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()  # noqa: S310
    totals = {"nv_inference_request_success": 0.0, "nv_inference_request_failure": 0.0}
    for name, value in re.findall(
        r'^(nv_inference_request_\w+)\{model="asl",.*\} (\S+)$', text, re.M
    ):
        if name in totals:
            totals[name] += float(value)
    return totals


def settled_counters(metrics_url: str, pause_s: float = 0.5, deadline_s: float = 20) -> dict:
    """The totals once two scrapes ``pause_s`` apart agree (the release-time count lags)."""
    end, last = time.monotonic() + deadline_s, counters(metrics_url)
    while time.monotonic() < end:
        time.sleep(pause_s)
        now = counters(metrics_url)
        if now == last:
            return now
        last = now
    raise AssertionError(f"Triton's counters still moving after {deadline_s} s: {last}")


def promtool_error_ratio(tmp_path: Path, totals: dict[str, float], expected: float) -> str:
    """promtool evaluates the rules' ``error_ratio`` on the scraped totals; its output."""
    (tmp_path / "none.yml").write_text("groups: []\n")
    series = [
        {"series": f'{name}{{model="asl",version="1"}}', "values": f"0 {value:g}"}
        for name, value in totals.items()
    ]
    check = {"expr": PromQL().error_ratio, "eval_time": "1m", "exp_samples": [{"value": expected}]}
    spec = {
        "rule_files": ["none.yml"],
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [check]}],
    }
    (tmp_path / "ratio_test.yml").write_text(yaml.safe_dump(spec))
    res = run_tool("promtool", "test", "rules", "ratio_test.yml", timeout=60, cwd=tmp_path)
    return res.stdout + res.stderr


@pytest.mark.skipif(find_tool("promtool") is None, reason="promtool missing")
def test_the_error_ratio_counts_each_failed_ensemble_request_once(tmp_path: Path) -> None:
    server = start_server(tiny_ensemble(tmp_path), tmp_path / "logs", exit_timeout_secs=3)
    try:
        failed = send(server.http_url, [1.0, 2.0, 3.0, -1.0, -2.0])
        totals = settled_counters(server.metrics_url)
    finally:
        server.stop()
    assert failed == 2 and totals["nv_inference_request_success"] == 3
    out = promtool_error_ratio(tmp_path, totals, expected=failed / 5)
    assert "SUCCESS" in out, f"{totals}: {out}"

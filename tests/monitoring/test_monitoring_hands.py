"""Hands found and NaN/Inf rows, from the metrics step's own code to the webhook and the page.

The serving module's metrics step (``metrics_step_model.py``, the file Triton runs) is loaded
against a mock of Triton's metrics API that serves what it counts on a loopback ``/metrics``
endpoint in Prometheus's text format, so the counter names and labels are the step's real ones.
A real Prometheus scrapes it and evaluates the rendered rules, a real Alertmanager delivers to a
webhook receiver: ``AslHandFoundRatioLow`` and ``AslNonFinitePredictions`` must fire when hands
stop being found and NaN rows arrive, show on the status page (headless Chromium), and resolve.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asl_testkit.browsers import chromium_page
from asl_testkit.servers import BackgroundLoop, LoopbackServer
from asl_testkit.web import start_web

from asl_recognition.monitoring.dashboard import StatusSource
from asl_recognition.monitoring.promql import PromQL
from asl_recognition.monitoring.settings import load_thresholds
from asl_recognition.monitoring.stack import MonitoringStack, StackOptions
from asl_recognition.monitoring.status_page import render_page
from asl_recognition.monitoring.tools import find_tool
from asl_recognition.monitoring.webhook import WebhookReceiver
from asl_recognition.netutil import free_port
from asl_recognition.serving.repository import METRICS_MODEL_SOURCE

needs_stack = pytest.mark.skipif(
    not all(find_tool(t) for t in ("prometheus", "alertmanager", "promtool", "amtool")),
    reason="prometheus/alertmanager missing: run scripts/install_system_deps.sh",
)
ALERTS = ("AslHandFoundRatioLow", "AslNonFinitePredictions")
CLASSES = 29


class MockMetricsEndpoint:
    """A named mock of ``triton_python_backend_utils``' metrics API plus a ``/metrics`` server.

    Families are created without a HISTOGRAM kind, so the step uses its counter fallback and
    every series is a plain counter: exactly what Triton would print for them.
    """

    def __init__(self) -> None:
        self.families: list[Any] = []
        self.lock = threading.Lock()
        endpoint = self

        class Metric:
            def __init__(self, labels: dict[str, str]) -> None:
                self.labels, self.value = labels, 0.0

            def increment(self, value: float) -> None:
                with endpoint.lock:
                    self.value += value

        class MetricFamily:
            COUNTER, GAUGE = "counter", "gauge"

            def __init__(self, name: str, description: str, kind: str) -> None:
                self.name, self.kind, self.metrics = name, kind, []
                endpoint.families.append(self)

            def Metric(self, labels: dict[str, str]) -> Metric:  # noqa: N802 - Triton's name
                metric = Metric(dict(labels))
                self.metrics.append(metric)
                return metric

        self.module = types.ModuleType("triton_python_backend_utils")
        self.module.MetricFamily = MetricFamily
        self.module.get_input_tensor_by_name = lambda request, name: types.SimpleNamespace(
            as_numpy=lambda: request[name]
        )
        self.module.Tensor = lambda name, array: (name, array)
        self.module.InferenceResponse = lambda output_tensors: output_tensors
        self.server: LoopbackServer | None = None

    def text(self) -> str:
        """Prometheus text exposition of every family the step created."""
        lines = []
        with self.lock:
            for family in self.families:
                lines.append(f"# TYPE {family.name} {family.kind}")
                for m in family.metrics:
                    labels = ",".join(f'{k}="{v}"' for k, v in sorted(m.labels.items()))
                    lines.append(f"{family.name}{{{labels}}} {m.value!r}")
        return "\n".join(lines) + "\n"

    def start(self) -> str:
        """Serve ``/metrics`` on loopback; returns ``host:port`` for Prometheus."""
        exposition = "text/plain; version=0.0.4"
        self.server = LoopbackServer(lambda request: (200, exposition, self.text().encode()))
        return f"127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


def load_step(endpoint: MockMetricsEndpoint, monkeypatch, tmp_path: Path) -> Any:
    """The landmark ensemble's metrics step (it has the hand-found input), as Triton loads it."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", endpoint.module)
    spec = importlib.util.spec_from_file_location("asl_metrics_step_hands", METRICS_MODEL_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    step = module.TritonPythonModel()
    step.hand_input_name = module.HAND_FOUND_INPUT
    config = {
        "name": "asl_metrics",
        "input": [{"name": "probabilities"}, {"name": step.hand_input_name}],
        "output": [{"name": "probabilities_out"}],
        "parameters": {"model_label": {"string_value": "asl"}},
    }
    step.initialize({"model_config": json.dumps(config), "model_repository": str(tmp_path)})
    return step


class Traffic(BackgroundLoop):
    """Batches of 10 images through the step every 0.1 s; ``mode`` picks healthy or drifted."""

    def __init__(self, step: Any) -> None:
        super().__init__()
        self.step, self.mode = step, "healthy"

    def batch(self) -> dict[str, np.ndarray]:
        probs = np.full((10, CLASSES), 0.1 / (CLASSES - 1), np.float32)
        probs[:, 0] = 0.9
        found = np.ones((10, 1), np.float32)
        if self.mode == "drifted":  # hands in 2 of 10 images; one row of NaN
            found[2:] = 0.0
            probs[0] = np.nan
        return {"probabilities": probs, self.step.hand_input_name: found}

    def tick(self) -> None:
        self.step.execute([self.batch()])


def api_status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "api/status", timeout=10) as resp:
        return json.load(resp)


def test_page_shows_hand_figures_and_dashes_without_a_hand_pipeline() -> None:
    """Tiles for the hand ratio and NaN rows: figures when exported, "—" when not."""

    def page(values: dict[str, Any]) -> str:
        history = {"request_rate": [], "confidence_mean": []}
        live = {"values": {"drift_tvd": None, **values}, "history": history, "alerts": []}
        live["error"] = None
        live["windows"] = {"hands": "30m", "nonfinite": "15m"}
        status = {"model": None, "model_error": None, "confusion": {"matrix": None, "png": None},
                  "live": live, "window": "5m", "prometheus": "http://127.0.0.1:9090"}  # fmt: skip
        return render_page(status)

    shown = page({"hand_found_ratio": 0.423, "hands_checked": 1204.6, "nonfinite_predictions": 3})
    for text in ("hands found (30m)", "42.3%", "1205", "NaN/Inf prediction rows (15m)", ">3<"):
        assert text in shown, text
    # a CNN ensemble exports no hand counters: 0/0 and empty results are no figure, not 0%
    empty = page({"hand_found_ratio": None, "hands_checked": None, "nonfinite_predictions": 0.0})
    tile = empty.split("hands found (30m)")[1].split("</div>")[0]
    assert "—" in tile and "%" not in tile and ">0<" in empty


@needs_stack
@pytest.mark.server
def test_hand_and_nonfinite_alerts_fire_show_and_resolve(
    tmp_path: Path, asl_workspace: Path, monkeypatch
) -> None:
    endpoint = MockMetricsEndpoint()
    step = load_step(endpoint, monkeypatch, tmp_path)
    windows = {"hand_window": "10s", "nonfinite_window": "10s", "window": "10s"}
    thresholds = load_thresholds(
        overrides={**windows, "hand_for": "0s", "hand_min_checked": 20}, env={}
    )
    hook = WebhookReceiver().start()
    options = StackOptions(
        run_dir=str(tmp_path / "monitoring"), triton_metrics=endpoint.start(),
        prometheus_port=free_port(), alertmanager_port=free_port(),
        scrape_interval="1s", evaluation_interval="1s", webhook_url=hook.url,
        group_wait="1s", group_interval="1s", repeat_interval="10m",
    )  # fmt: skip
    stack = MonitoringStack(options, thresholds, env={})
    # snapshots of 2 s (not 5 s): the figures read right after the alerts fire are newer
    dash = start_web(status=StatusSource(stack.prometheus_url, "local", PromQL(**windows), 2.0))
    page_url = dash.url + "/"
    try:
        stack.start()
        with Traffic(step) as traffic:
            time.sleep(12)  # healthy traffic fills the 10 s windows
            values = api_status(page_url)["live"]["values"]
            assert values["hand_found_ratio"] == pytest.approx(1.0), values
            assert values["nonfinite_predictions"] == 0 and values["hands_checked"] > 50
            assert not {ev for ev in hook.events() if ev[0] in ALERTS}, hook.events()

            traffic.mode = "drifted"
            fired = hook.wait_for(lambda ev: all((a, "firing") in ev for a in ALERTS), 60)
            assert fired, f"alerts did not fire; events {hook.events()}"
            values = api_status(page_url)["live"]["values"]
            assert values["hand_found_ratio"] < 0.6 and values["nonfinite_predictions"] > 0
            dom = chromium_page(page_url + "status", tmp_path)
            for text in (*ALERTS, "hands found (10s)", "NaN/Inf prediction rows (10s)"):
                assert text in dom, f"{text!r} missing from the status page"

            traffic.mode = "healthy"
            resolved = hook.wait_for(lambda ev: all((a, "resolved") in ev for a in ALERTS), 60)
            assert resolved, f"alerts did not resolve; events {hook.events()}"
    finally:
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(endpoint.stop)
            cleanup.callback(hook.stop)
            cleanup.callback(stack.stop)
            cleanup.callback(dash.stop)
    assert not stack.running()

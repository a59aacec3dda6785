"""The metrics step's bookkeeping, run in-process against a mock of Triton's metrics API.

The real server tests (test_serving_server.py) check the exported values; this one counts the
calls, which the server cannot show: one class-counter increment per class per request.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest

from asl_recognition.serving.repository import METRICS_MODEL_SOURCE


class MockMetric:
    def __init__(self, labels: dict, calls: list) -> None:
        self.labels, self.calls, self.value = labels, calls, 0.0

    def increment(self, value: float) -> None:
        self.calls.append((self.labels.get("class"), value))
        self.value += value

    def observe(self, value: float) -> None:
        self.calls.append(("observe", value))
        self.value += value


def mock_pb_utils(calls: list) -> types.ModuleType:
    """A named mock of triton_python_backend_utils: MetricFamily/Metric record their calls."""

    class MockMetricFamily:
        COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

        def __init__(self, name: str, description: str, kind: str) -> None:
            self.name, self.metrics = name, []

        def Metric(self, labels: dict, buckets=None) -> MockMetric:  # noqa: N802 - Triton's name
            metric = MockMetric(labels, calls if self.name == "asl_predictions_total" else [])
            self.metrics.append(metric)
            return metric

    module = types.ModuleType("triton_python_backend_utils")
    module.MetricFamily = MockMetricFamily
    module.get_input_tensor_by_name = lambda request, name: types.SimpleNamespace(
        as_numpy=lambda: request[name]
    )
    module.Tensor = lambda name, array: (name, array)
    module.InferenceResponse = lambda output_tensors: output_tensors
    return module


def run(step, probs: np.ndarray) -> None:
    """One request through execute(); the probabilities must come back unchanged."""
    ((name, out),) = step.execute([{"probabilities": probs}])[0]
    assert name == "probabilities_out" and out is probs


@pytest.fixture
def step(monkeypatch, tmp_path):
    calls: list = []
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", mock_pb_utils(calls))
    spec = importlib.util.spec_from_file_location("asl_metrics_step", METRICS_MODEL_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    (tmp_path / "labels.txt").write_text("A\nB\nC\n")
    config = {
        "name": "asl_metrics",
        "input": [{"name": "probabilities"}],
        "output": [{"name": "probabilities_out"}],
        "parameters": {"low_confidence_threshold": {"string_value": "0.5"}},
    }
    model.initialize({"model_config": json.dumps(config), "model_repository": str(tmp_path)})
    model.class_calls = calls
    return model


def test_one_class_increment_per_class_per_request(step) -> None:
    rng = np.random.default_rng(0)
    winners = rng.integers(0, 2, size=64)  # only classes A and B win
    probs = np.full((64, 3), 0.1, np.float32)
    probs[np.arange(64), winners] = 0.8
    run(step, probs)
    assert sorted(step.class_calls) == [
        ("A", float((winners == 0).sum())),
        ("B", float((winners == 1).sum())),
    ]


def test_nonfinite_rows_are_counted_apart_and_kept_out_of_the_sums(step) -> None:
    probs = np.array(
        [[0.2, 0.7, 0.1], [np.nan] * 3, [0.1, np.inf, 0.0], [0.6, 0.3, 0.1]], np.float32
    )
    run(step, probs)
    assert step.nonfinite.value == 2
    assert step.confidence.value == pytest.approx(0.7 + 0.6)  # observe() sums the values
    assert sorted(step.class_calls) == [("A", 1.0), ("B", 1.0)]
    run(step, np.full((3, 3), np.nan, np.float32))
    assert step.nonfinite.value == 5 and np.isfinite(step.confidence.value)

"""Triton Python-backend model: pass the probabilities through and record model-level metrics.

It is the last step of the ``<name>`` ensemble (``<name>_onnx`` -> this). Triton's own metrics
cover requests and latency but say nothing about what the model predicts; these do, and they
work the same with the real C++ onnxruntime backend in Docker, which exports no such metrics.
The repository generator copies this file to ``<repo>/<name>_metrics/1/model.py``.

Metrics (names fixed by the monitoring contract):
- ``asl_prediction_confidence``: histogram of top-1 confidence (label ``model``); bucketed
  counters ``asl_prediction_confidence_bucket{le=...}`` + ``_count``/``_sum`` if this Triton
  build has no HISTOGRAM metric kind;
- ``asl_predictions_total``: counter of predicted classes (labels ``model``, ``class``);
- ``asl_low_confidence_total``: counter of predictions under the configured threshold;
- ``asl_nonfinite_predictions_total``: rows holding NaN or +-Inf, passed through but left out
  of every other metric (one NaN in a Prometheus sum would make it NaN for good);
- ``asl_hand_checked_total`` and ``asl_hand_found_total`` (label ``model``), only in the
  ensemble of a landmark classifier, whose config gives this step the inputs ``hand_found`` and
  ``hand_box``: images the hand pipeline looked at, and those where it found a hand (their ratio
  falls when the camera or the lighting drifts). Both are passed through as ``<input>_out``, so
  every output of that ensemble comes from this step and no request skips the counting (Triton
  runs only the steps a request's outputs need).

Triton cannot hide an ensemble's steps: any client that reaches the server can call
``<name>_metrics`` directly with made-up probabilities. Such calls can skew these metrics but
never poison them (non-finite rows are only counted); keep the ports on a trusted network.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

HAND_FOUND_INPUT = "hand_found"
BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def _parameter(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


class _CounterHistogram:
    """Prometheus-style cumulative buckets built from counters, for builds without HISTOGRAM."""

    def __init__(self, labels):
        # A MetricFamily must outlive its Metric objects: keep every family referenced.
        self.families = {
            part: pb_utils.MetricFamily(
                name=f"asl_prediction_confidence_{part}",
                description=f"Top-1 confidence, histogram fallback: {part}",
                kind=pb_utils.MetricFamily.COUNTER,
            )
            for part in ("bucket", "count", "sum")
        }
        bucket = self.families["bucket"]
        self.buckets = [
            (le, bucket.Metric(labels={**labels, "le": f"{le:g}"})) for le in BUCKETS
        ] + [(float("inf"), bucket.Metric(labels={**labels, "le": "+Inf"}))]
        self.count = self.families["count"].Metric(labels=labels)
        self.sum = self.families["sum"].Metric(labels=labels)

    def observe(self, value):
        for le, metric in self.buckets:
            if value <= le:
                metric.increment(1)
        self.count.increment(1)
        self.sum.increment(float(value))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.threshold = float(_parameter(config, "low_confidence_threshold", "0.5"))
        self.model_label = _parameter(config, "model_label", config["name"])
        labels_file = os.path.join(args["model_repository"], "labels.txt")
        self.labels = []
        if os.path.isfile(labels_file):
            with open(labels_file, encoding="utf-8") as fh:
                self.labels = [line.strip() for line in fh if line.strip()]
        labels = {"model": self.model_label}
        # Families are kept as attributes: a MetricFamily must outlive its Metric objects.
        if hasattr(pb_utils.MetricFamily, "HISTOGRAM"):
            self.confidence_family = pb_utils.MetricFamily(
                name="asl_prediction_confidence",
                description="Top-1 confidence of served predictions",
                kind=pb_utils.MetricFamily.HISTOGRAM,
            )
            self.confidence = self.confidence_family.Metric(labels=labels, buckets=BUCKETS)
        else:
            self.confidence = _CounterHistogram(labels)
        self.predictions = pb_utils.MetricFamily(
            name="asl_predictions_total",
            description="Served predictions per predicted class",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        # Every known class at 0 from the start: a series Prometheus first sees at 3 counts
        # only what comes after, so each class's first predictions after a (re)start were lost
        # to increase() (the drift alert, the class shares); Triton pre-creates its own so.
        self.per_class = {}
        for index in range(len(self.labels)):
            self._class_counter(index)
        self.low_confidence_family = pb_utils.MetricFamily(
            name="asl_low_confidence_total",
            description="Served predictions whose top-1 confidence is under the threshold",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.low_confidence = self.low_confidence_family.Metric(labels=labels)
        self.nonfinite_family = pb_utils.MetricFamily(
            name="asl_nonfinite_predictions_total",
            description="Served prediction rows holding NaN or Inf (left out of other metrics)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.nonfinite = self.nonfinite_family.Metric(labels=labels)
        self.hand_input = next(
            (i["name"] for i in config["input"] if i["name"] == HAND_FOUND_INPUT), None
        )
        outputs = {o["name"] for o in config["output"]}
        self.passthrough = [
            (i["name"], i["name"] + "_out")
            for i in config["input"][1:]
            if i["name"] + "_out" in outputs
        ]
        if self.hand_input:
            self.hand_families = [
                pb_utils.MetricFamily(
                    name=name, description=text, kind=pb_utils.MetricFamily.COUNTER
                )
                for name, text in (
                    ("asl_hand_checked_total", "Images the hand pipeline looked at"),
                    ("asl_hand_found_total", "Images in which the hand pipeline found a hand"),
                )
            ]
            self.hand_checked, self.hand_found = (
                f.Metric(labels=labels) for f in self.hand_families
            )

    def _record_hands(self, request):
        """Count the request's images and those with a hand (flag > 0.5)."""
        flags = pb_utils.get_input_tensor_by_name(request, self.hand_input).as_numpy()
        flags = np.asarray(flags, dtype=np.float64).reshape(-1)
        self.hand_checked.increment(int(flags.size))
        found = int(np.count_nonzero(flags > 0.5))
        if found:
            self.hand_found.increment(found)

    def _class_counter(self, index):
        metric = self.per_class.get(index)
        if metric is None:
            name = self.labels[index] if index < len(self.labels) else str(index)
            metric = self.predictions.Metric(labels={"model": self.model_label, "class": name})
            self.per_class[index] = metric
        return metric

    def _record(self, probs):
        """Update the metrics for one request: one increment per class seen, not per image."""
        flat = np.asarray(probs, dtype=np.float64).reshape(-1, probs.shape[-1])
        finite = np.isfinite(flat).all(axis=1)
        bad = int(flat.shape[0] - np.count_nonzero(finite))
        if bad:
            self.nonfinite.increment(bad)
        flat = flat[finite]
        if not flat.shape[0] or not flat.shape[1]:
            return
        top = flat.max(axis=1)
        for conf in top.tolist():
            self.confidence.observe(conf)
        counts = np.bincount(flat.argmax(axis=1), minlength=flat.shape[1])
        for index in np.flatnonzero(counts).tolist():
            self._class_counter(index).increment(int(counts[index]))
        low = int(np.count_nonzero(top < self.threshold))
        if low:
            self.low_confidence.increment(low)

    def execute(self, requests):
        responses = []
        for request in requests:
            probs = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            self._record(probs)
            if self.hand_input:
                self._record_hands(request)
            tensors = [pb_utils.Tensor(self.output_name, probs)]
            for name, out in self.passthrough:
                value = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                tensors.append(pb_utils.Tensor(out, value))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

"""Every PromQL expression of the alert rules, the status page and the Grafana dashboard.

One builder so a metric rename or a changed formula reaches all three readers at once; the
configured Triton model, Prometheus job and windows go in, expression strings come out.

Metrics used (checked against a real tritonserver 2.51 on this machine):
- Triton: ``nv_inference_request_success`` / ``nv_inference_request_failure{reason}`` counters,
  ``nv_inference_request_duration_us`` (cumulative counter), and the latency summary
  ``nv_inference_request_summary_us{quantile}`` that exists only with
  ``--metrics-config summary_latencies=true``; a model's series disappear when it is unloaded.
- The ensemble's metrics step: ``asl_prediction_confidence`` (histogram),
  ``asl_predictions_total{class}``, ``asl_low_confidence_total``,
  ``asl_nonfinite_predictions_total`` (NaN/Inf rows, kept out of the others) and, for the
  landmark ensemble, ``asl_hand_checked_total`` / ``asl_hand_found_total`` (images the hand
  pipeline looked at / found a hand in); all labelled ``model`` (the ensemble's name).
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import AlertThresholds

# recording-rule outputs (names carry no window: it is configurable)
CONFIDENCE_MEAN = "asl:confidence_mean"
LOW_CONFIDENCE_RATIO = "asl:low_confidence_ratio"
PREDICTED_CLASS_SHARE = "asl:predicted_class_share"
CLASS_DRIFT_TVD = "asl:class_drift_tvd"
BASELINE_CLASS_SHARE = "asl:baseline_class_share"
BASELINE_CONFIDENCE_MEAN = "asl:baseline_confidence_mean"
HAND_FOUND_RATIO = "asl:hand_found_ratio"  # over the hand window

# Triton 2.51 adds 2 to an ensemble's nv_inference_request_failure per failed request (an
# unreadable image, a step answering an error); every served model is an ensemble, so failures
# are divided by it to count requests (test_monitoring_failures.py checks the real server).
ENSEMBLE_FAILURE_COUNT = 2

GRAFANA_MODEL = "$model"  # the dashboard's model variable
GRAFANA_WINDOW = "$__rate_interval"


def num(value: float) -> str:
    """PromQL literal without float noise (0.6 not 0.6000000000000001)."""
    return f"{float(value):g}"


@dataclass(frozen=True)
class PromQL:
    """Expressions for one Triton model scraped by one Prometheus job (defaults: the alerts').

    Every series is selected by its ``model`` label: a repository may serve several ensembles,
    and one summed with another had paged the healthy one under its name."""

    model: str = AlertThresholds.model_name
    job: str = AlertThresholds.triton_job
    window: str = AlertThresholds.window
    drift_window: str = AlertThresholds.drift_window
    hand_window: str = AlertThresholds.hand_window
    nonfinite_window: str = AlertThresholds.nonfinite_window

    @classmethod
    def from_thresholds(cls, t: AlertThresholds) -> "PromQL":
        """The expressions the alert rules evaluate with thresholds ``t``."""
        return cls(
            t.model_name, t.triton_job, t.window, t.drift_window, t.hand_window, t.nonfinite_window
        )

    @classmethod
    def for_grafana(cls) -> "PromQL":
        """Grafana's model variable and rate interval; the default job of the Docker path."""
        return cls(model=GRAFANA_MODEL, window=GRAFANA_WINDOW)

    # ------------------------------------------------------------ Triton
    def _sel(self, metric: str, extra: str = "") -> str:
        return f'{metric}{{model="{self.model}"{extra}}}'

    def _rate(self, metric: str) -> str:
        return f"sum(rate({self._sel(metric)}[{self.window}]))"

    @property
    def up(self) -> str:
        return f'max(up{{job="{self.job}"}})'

    @property
    def target_down(self) -> str:
        return f'up{{job="{self.job}"}} == 0'

    @property
    def model_absent(self) -> str:
        """Triton is scraped but exports no statistics for the model (not loaded)."""
        return f"absent({self._sel('nv_inference_request_success')}) and on() ({self.up} == 1)"

    @property
    def model_loaded(self) -> str:
        return f"count({self._sel('nv_inference_request_success')}) > bool 0"

    @property
    def success_rate(self) -> str:
        return self._rate("nv_inference_request_success")

    @property
    def failure_rate(self) -> str:
        """Failed requests per second (not Triton's doubled count: ENSEMBLE_FAILURE_COUNT)."""
        return f"({self._rate('nv_inference_request_failure')} / {ENSEMBLE_FAILURE_COUNT})"

    @property
    def request_rate(self) -> str:
        return f"({self.success_rate} + {self.failure_rate})"

    @property
    def error_ratio(self) -> str:
        return f"{self.failure_rate} / ({self.success_rate} + {self.failure_rate})"

    def requests_in(self, window: str) -> str:
        """Requests (successful or not) over ``window``."""
        ok = f"sum(increase({self._sel('nv_inference_request_success')}[{window}]))"
        fail = f"sum(increase({self._sel('nv_inference_request_failure')}[{window}]))"
        return f"{ok} + {fail} / {ENSEMBLE_FAILURE_COUNT}"

    @property
    def latency_p95_ms(self) -> str:
        summary = self._sel("nv_inference_request_summary_us", ',quantile="0.95"')
        return f"max({summary}) / 1000"

    @property
    def latency_mean_ms(self) -> str:
        return f"{self._rate('nv_inference_request_duration_us')} / {self.success_rate} / 1000"

    @property
    def latency_ms(self) -> str:
        """p95 when Triton exports latency summaries, else the mean."""
        return f"(({self.latency_p95_ms}) or ({self.latency_mean_ms}))"

    @property
    def queue_mean_ms(self) -> str:
        return f"{self._rate('nv_inference_queue_duration_us')} / {self.success_rate} / 1000"

    @property
    def batch_mean(self) -> str:
        return f"{self._rate('nv_inference_count')} / {self._rate('nv_inference_exec_count')}"

    cpu_utilisation = "max(nv_cpu_utilization)"
    firing_alerts = 'ALERTS{alertstate="firing"}'

    # ------------------------------------------------------------ metrics step
    @property
    def confidence_mean(self) -> str:
        w = self.window
        return (
            f"(sum(rate({self._sel('asl_prediction_confidence_sum')}[{w}]))"
            f" / sum(rate({self._sel('asl_prediction_confidence_count')}[{w}])))"
        )

    @property
    def low_confidence_ratio(self) -> str:
        w = self.window
        return (
            f"sum(rate({self._sel('asl_low_confidence_total')}[{w}]))"
            f" / sum(rate({self._sel('asl_prediction_confidence_count')}[{w}]))"
        )

    def enough_confidence_samples(self, minimum: float) -> str:
        count = self._sel("asl_prediction_confidence_count")
        return f"sum(increase({count}[{self.window}])) >= {num(minimum)}"

    @property
    def confidence_histogram(self) -> str:
        bucket = self._sel("asl_prediction_confidence_bucket")
        return f"sum by (le) (increase({bucket}[{self.window}]))"

    def class_counts(self, window: str | None = None) -> str:
        """Predictions per class over ``window`` (default: the rate window)."""
        predictions = self._sel("asl_predictions_total")
        return f"sum by (class) (increase({predictions}[{window or self.window}]))"

    @property
    def drift_window_predictions(self) -> str:
        return f"sum(increase({self._sel('asl_predictions_total')}[{self.drift_window}]))"

    # ------------------------------------------------------------ hand pipeline, non-finite rows
    def _increase(self, metric: str, window: str) -> str:
        return f"sum(increase({self._sel(metric)}[{window}]))"

    def hands_checked(self, window: str | None = None) -> str:
        """Images the hand pipeline looked at over ``window`` (default: the hand window)."""
        return self._increase("asl_hand_checked_total", window or self.hand_window)

    def hand_found_ratio_in(self, window: str | None = None) -> str:
        """Share of checked images with a hand found; NaN (never below a floor) if none were."""
        w = window or self.hand_window
        return f"{self._increase('asl_hand_found_total', w)} / {self.hands_checked(w)}"

    @property
    def hand_found_ratio(self) -> str:
        return self.hand_found_ratio_in()

    def nonfinite_predictions(self, window: str | None = None) -> str:
        """Prediction rows holding NaN/Inf over ``window`` (default: the non-finite window)."""
        return self._increase("asl_nonfinite_predictions_total", window or self.nonfinite_window)

    # ------------------------------------------------------------ drift (recording rules)
    @property
    def predicted_class_share(self) -> str:
        return (
            f"{self.class_counts(self.drift_window)}"
            f" / on() group_left() {self.drift_window_predictions}"
        )

    @property
    def class_drift_tvd(self) -> str:
        """Total variation distance between live and training class shares (0 same, 1 disjoint).

        Classes the baseline lacks count fully; the result is empty without predictions.
        """
        share, base = PREDICTED_CLASS_SHARE, BASELINE_CLASS_SHARE
        tvd = (
            f"0.5 * (sum(abs(({share} or on(class) ({base} * 0)) - on(class) {base}))"
            f" + (sum({share} unless on(class) {base}) or vector(0)))"
        )
        return f"({tvd}) and on() ({self.drift_window_predictions} > 0)"

    baseline_confidence_mean = f"max({BASELINE_CONFIDENCE_MEAN})"
    drift_tvd = f"max({CLASS_DRIFT_TVD})"

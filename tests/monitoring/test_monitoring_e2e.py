"""End to end on loopback: Triton (ensemble + metrics) -> Prometheus -> Alertmanager -> webhook.

A tiny CNN is trained for a few steps on the bundled real images and exported per the model
contract. Real images it is confident about, then real images it is unsure about, are sent to
Triton; the mean-confidence alert must fire at the webhook receiver and then resolve once
confident traffic returns. While it fires, the status page is rendered in headless Chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from asl_testkit.browsers import chromium_page
from asl_testkit.servers import BackgroundLoop
from asl_testkit.tiny_models import export_images_model, fit
from asl_testkit.web import start_web
from PIL import Image

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.monitoring.grafana import exprs, metric_names
from asl_recognition.monitoring.settings import load_thresholds
from asl_recognition.monitoring.stack import MonitoringStack, StackOptions
from asl_recognition.monitoring.tools import find_tool
from asl_recognition.monitoring.webhook import WebhookReceiver
from asl_recognition.netutil import free_port
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA, SAMPLE_TEST_IMAGES

pytestmark = [
    pytest.mark.server,
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(find_tool(t) for t in ("prometheus", "alertmanager", "promtool", "amtool")),
        reason="prometheus/alertmanager missing: run scripts/install_system_deps.sh",
    ),
]

SIZE = 32
ARTIFACTS = REPO_ROOT / "test-artifacts"
GRAFANA = REPO_ROOT / "triton" / "monitoring" / "grafana" / "dashboards"


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def train_tiny_model(out: Path, steps: int = 120) -> dict:
    """Train/export a 29-class CNN on data/sample (12 train + 8 held out per class).

    Writes model.onnx (uint8 NCHW ``images`` -> softmax ``probabilities``), classes.txt,
    baseline.json (training class shares + held-out confidence histogram) and metrics.json
    (held-out accuracy and confusion matrix), as training does for real models.
    """
    import torch
    from torch import nn

    torch.manual_seed(0)
    train_x, train_y, held_x, held_y = [], [], [], []
    for index, name in enumerate(CLASSES):
        files = sorted((SAMPLE_DATA / name).glob("*.jpg"))
        for i, path in enumerate(files[:20]):
            (train_x if i < 12 else held_x).append(_load(path))
            (train_y if i < 12 else held_y).append(index)
    x, y = torch.tensor(np.stack(train_x)), torch.tensor(train_y)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                nn.Flatten(), nn.Linear(32, len(CLASSES)),
            )  # fmt: skip

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            scaled = (images.float() / 255.0 - 0.5) / 0.25
            return torch.softmax(self.body(scaled), dim=1)

    net = Net()
    fit(net, x, y, steps, batch=64)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    export_images_model(net, x.shape[-1], onnx_path)
    classes_path = out / "classes.txt"
    write_class_file(classes_path, list(CLASSES))
    with torch.no_grad():
        probs = net(torch.tensor(np.stack(held_x))).numpy()
    pred, conf = probs.argmax(1), probs.max(1)
    cm = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for t, p in zip(held_y, pred):
        cm[t, p] += 1
    buckets = [round(0.1 * i, 1) for i in range(1, 11)]
    counts = np.histogram(conf, bins=[0.0, *buckets])[0].tolist()
    shares = np.bincount(train_y, minlength=len(CLASSES)) / len(train_y)
    baseline = {
        "class_distribution": {c: float(s) for c, s in zip(CLASSES, shares)},
        "confidence_histogram": {"buckets": buckets, "counts": counts},
    }
    (out / "baseline.json").write_text(json.dumps(baseline))

    def accuracy(pairs: list[tuple[Path, str]]) -> float:
        with torch.no_grad():
            got = net(torch.tensor(np.stack([_load(p) for p, _ in pairs]))).argmax(1).numpy()
        return float(np.mean([CLASSES[g] == c for g, (_, c) in zip(got, pairs)]))

    test_set = [(p, p.name.split("_test")[0]) for p in sorted(SAMPLE_TEST_IMAGES.glob("*.jpg"))]
    external = [
        (p, p.parent.name) for p in sorted((REPO_ROOT / "data/external_sample").glob("*/*"))
    ]
    metrics = {
        "val_accuracy": float((pred == np.array(held_y)).mean()),
        "test_accuracy": accuracy(test_set),
        "external_accuracy": accuracy(external),
        "val_confusion_matrix": cm.tolist(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    return {"onnx": onnx_path, "classes": classes_path, "baseline": out / "baseline.json",
            "metrics": metrics, "run_dir": out}  # fmt: skip


def split_by_confidence(onnx_path: Path, k: int = 40) -> tuple[np.ndarray, np.ndarray, float]:
    """The k real images the model is most and least sure about, and a threshold between them.

    The threshold lies between the least sure of the sure images and the surest of the unsure
    ones, so that the mean over any window of either set is on its side of it: under load the
    10 s window holds only part of a set (the midpoint of the two means had fallen inside the
    sure set, and a window of its least sure images fired the alert).
    """
    import onnxruntime as ort

    paths = sorted(SAMPLE_DATA.glob("*/*.jpg")) + sorted(
        (REPO_ROOT / "data" / "external_sample").glob("*/*")
    )
    images = np.stack([_load(p) for p in paths])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    conf = session.run(["probabilities"], {"images": images})[0].max(1)
    order = np.argsort(conf)
    unsure, sure = order[:k], order[-k:]
    lo, hi = float(conf[unsure].max()), float(conf[sure].min())
    assert hi - lo > 0.05, f"no confidence gap to test with: unsure <= {lo:.3f}, sure >= {hi:.3f}"
    return images[sure], images[unsure], (lo + hi) / 2


class Traffic(BackgroundLoop):
    """Batch-1 HTTP inference in a background thread; ``mode`` switches the image set."""

    period = 0.04

    def __init__(self, url: str, sets: dict[str, np.ndarray]) -> None:
        import tritonclient.http as http

        super().__init__()
        self.http = http
        self.client = http.InferenceServerClient(url)
        self.sets, self.mode, self.sent, self.errors = sets, "sure", 0, []
        self._next = 0

    def tick(self) -> None:
        images = self.sets[self.mode]
        batch = images[self._next % len(images)][None]
        self._next += 1
        inp = self.http.InferInput("images", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        try:
            self.client.infer("asl", [inp])
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on
            self.errors.append(repr(exc))

    def close(self) -> None:
        self.client.close()


def prom_query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)["data"]["result"]


def test_low_confidence_alert_fires_and_resolves_end_to_end(
    tmp_path: Path, asl_workspace: Path
) -> None:
    from asl_recognition.monitoring.dashboard import StatusSource
    from asl_recognition.monitoring.promql import PromQL
    from asl_recognition.registry import get_registry
    from asl_recognition.registry.base import NewModel
    from asl_recognition.serving.repository import build_repository
    from asl_recognition.serving.triton_server import TritonServer

    model = train_tiny_model(tmp_path / "run")
    sure, unsure, threshold = split_by_confidence(model["onnx"])
    registry = get_registry("local")
    params = {"run_dir": str(model["run_dir"]), "arch": "tiny-cnn", "image_size": SIZE}
    record = registry.register(
        NewModel(
            "asl", str(model["onnx"]), str(model["classes"]), model["metrics"], params,
            baseline_path=str(model["baseline"]),
        )
    )  # fmt: skip
    registry.promote(record.id)
    repo = tmp_path / "triton_repo"
    build_repository(
        model["onnx"], model["classes"], repo, model_name="asl", low_confidence_threshold=threshold
    )
    thresholds = load_thresholds(
        overrides={
            "window": "10s", "confidence_for": "0s", "min_confidence_samples": 5,
            "min_mean_confidence": round(threshold, 3), "not_ready_for": "0s",
        },
        env={},
    )  # fmt: skip
    triton = TritonServer(
        repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
        log_path=tmp_path / "triton.log", exit_timeout_secs=2,
    )  # fmt: skip
    hook = WebhookReceiver().start()
    options = StackOptions(
        run_dir=str(tmp_path / "monitoring"),
        triton_metrics=f"127.0.0.1:{triton.metrics_port}",
        prometheus_port=free_port(), alertmanager_port=free_port(),
        scrape_interval="1s", evaluation_interval="1s",
        webhook_url=hook.url, group_wait="1s", group_interval="1s", repeat_interval="10m",
    )  # fmt: skip
    stack = MonitoringStack(options, thresholds, baseline=None, env={})
    from asl_recognition.monitoring.baseline import load_baseline

    stack.baseline = load_baseline(record.baseline_path)
    dash = None
    try:
        triton.start().wait_ready(120)
        stack.start()
        name = "AslMeanConfidenceLow"
        with Traffic(triton.http_url, {"sure": sure, "unsure": unsure}) as traffic:
            time.sleep(12)  # confident traffic fills the 10 s window
            assert (name, "firing") not in hook.events(), hook.events()
            mean = prom_query(stack.prometheus_url, "asl:confidence_mean")
            assert mean and float(mean[0]["value"][1]) > threshold, mean
            traffic.mode = "unsure"
            fired = hook.wait_for(lambda ev: (name, "firing") in ev, timeout=60)
            assert fired, f"{name} never fired; events {hook.events()}"

            # status page while the alert fires: model from the registry, live data, the alert
            dash = start_web(
                status=StatusSource(prometheus=stack.prometheus_url, queries=PromQL(window="30s"))
            )
            page_url = dash.url + "/status"
            shot = ARTIFACTS / "status-page.png"
            dom = chromium_page(page_url, tmp_path, screenshot=shot)
            expected = (name, "asl v1", "val_accuracy", "external_accuracy", "Confusion matrix",
                        "requests/s", "mean confidence", "p95 latency", "Triton",
                        "hands found", "NaN/Inf prediction rows")  # fmt: skip
            for text in expected:
                assert text in dom, f"{text!r} missing from the status page"
            assert "No production model yet" not in dom and "unreachable" not in dom
            # the README's screenshot: written when missing or on request, so that test runs
            # do not dirty a tracked file
            docs_png = REPO_ROOT / "docs" / "status-page.png"
            if not docs_png.exists() or os.environ.get("ASL_UPDATE_DOCS_SCREENSHOT") == "1":
                docs_png.parent.mkdir(exist_ok=True)
                shutil.copy(shot, docs_png)

            traffic.mode = "sure"
            resolved = hook.wait_for(lambda ev: (name, "resolved") in ev, timeout=60)
            assert resolved, f"{name} never resolved; events {hook.events()}"
            assert traffic.sent > 100 and not traffic.errors, traffic.errors[:3]

        # every metric the rules, the status page and Grafana read is really exported
        names = set(
            json.load(
                urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/label/__name__/values")
            )["data"]
        )
        for metric in (
            "nv_inference_request_success", "nv_inference_request_failure",
            "nv_inference_request_duration_us", "nv_inference_request_summary_us",
            "asl_prediction_confidence_sum", "asl_prediction_confidence_count",
            "asl_prediction_confidence_bucket", "asl_predictions_total",
            "asl_low_confidence_total", "asl_nonfinite_predictions_total",
            "asl:class_drift_tvd", "asl:baseline_class_share",
        ):  # fmt: skip
            assert metric in names, f"{metric} not in Prometheus"
        (ARTIFACTS / "prometheus-metric-names.json").write_text(json.dumps(sorted(names)))
        # the Grafana dashboard (Docker path) queries only series this live stack has; the hand
        # counters come from a landmark ensemble only (tests/monitoring/test_monitoring_hands.py)
        grafana_dash = json.loads((GRAFANA / "asl-serving.json").read_text())
        used = set().union(*(metric_names(e) for e in exprs(grafana_dash))) - {"ALERTS"}
        used -= {"asl_hand_checked_total", "asl_hand_found_total", "asl:hand_found_ratio"}
        assert used <= names, f"Grafana queries unknown series: {used - names}"
    finally:
        # ExitStack runs every stop even when one of them raises
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(hook.stop)
            cleanup.callback(triton.stop)
            cleanup.callback(stack.stop)
            if dash is not None:
                cleanup.callback(dash.stop)
    assert not stack.running() and triton.process is None

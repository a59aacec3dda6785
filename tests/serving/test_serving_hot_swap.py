"""Publishing a new model into a polled repository: no lost request; config follows the model."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as thttp

from asl_recognition.serving.repository import build_repository

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _expected(model, batch: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(model.onnx)).run(["probabilities"], {"images": batch})[0]


def _real_batch(size: int, n: int = 2) -> np.ndarray:
    from asl_testkit.tiny_models import load_images

    return load_images(["A", "B"], size, per_class=1)[0][:n]


@pytest.fixture(scope="module")
def swap_server(tiny_models, tmp_path_factory):
    from asl_testkit.servers import start_server

    root = tmp_path_factory.mktemp("hot_swap")
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, root / "repo", keep_versions=1)
    server = start_server(root / "repo", root, poll_secs=1, exit_timeout_secs=3)
    server.root = root
    yield server
    server.stop()


def test_hot_swap_loses_no_request(swap_server, tiny_models) -> None:
    a, a2 = tiny_models["a"], tiny_models["a2"]
    batch = _real_batch(32)
    old, new = _expected(a, batch), _expected(a2, batch)
    assert np.abs(old - new).max() > 1e-3
    stop = threading.Event()
    counts = {"old": 0, "new": 0, "other": 0}
    failures: list[str] = []
    lock = threading.Lock()

    def sender() -> None:
        client = thttp.InferenceServerClient(swap_server.http_url)
        try:
            while not stop.is_set():
                inp = thttp.InferInput("images", list(batch.shape), "UINT8")
                inp.set_data_from_numpy(batch)
                try:
                    got = client.infer("asl", [inp]).as_numpy("probabilities")
                except Exception as exc:  # every failure counts, whatever its type
                    with lock:
                        failures.append(str(exc))
                    continue
                key = (
                    "old"
                    if np.abs(got - old).max() < 1e-5
                    else "new" if np.abs(got - new).max() < 1e-5 else "other"
                )
                with lock:
                    counts[key] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    info = build_repository(a2.onnx, a2.classes, swap_server.repo, keep_versions=1)
    assert info["version"] == 2 and info["versions"] == [2] and info["pruned"] == [1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and counts["new"] < 20:
        time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(10)
    assert failures == [], failures[:3]
    assert counts["other"] == 0
    assert counts["old"] > 0 and counts["new"] >= 20, counts
    client = thttp.InferenceServerClient(swap_server.http_url)
    try:
        assert client.is_model_ready("asl_onnx", "2") and not client.is_model_ready(
            "asl_onnx", "1"
        )
    finally:
        client.close()


def test_config_follows_a_different_model(swap_server, tiny_models) -> None:
    """Other classes, size and architecture: regenerate, and the server + client follow."""
    from test_serving_server import run_client

    from asl_recognition.paths import SAMPLE_TEST_IMAGES

    b = tiny_models["b"]
    build_repository(b.onnx, b.classes, swap_server.repo, keep_versions=1)
    client = thttp.InferenceServerClient(swap_server.http_url)
    deadline = time.monotonic() + 45
    shape = None
    try:
        while time.monotonic() < deadline:
            try:
                if client.is_model_ready("asl"):
                    shape = client.get_model_metadata("asl")["inputs"][0]["shape"]
                    if shape == [-1, 3, 48, 48]:
                        break
            except Exception:  # the ensemble is briefly unavailable while it reloads
                pass
            time.sleep(0.5)
    finally:
        client.close()
    assert shape == [-1, 3, 48, 48]
    batch = _real_batch(48)
    got = _infer(swap_server.http_url, batch)
    assert got.shape == (2, 5) and np.abs(got - _expected(b, batch)).max() < 1e-5
    proc = run_client("--dir", str(SAMPLE_TEST_IMAGES), "--url", swap_server.http_url)
    assert proc.returncode == 0, proc.stderr
    labels = {line.rsplit(" ", 2)[1] for line in proc.stdout.splitlines()}
    assert labels and labels <= set(b.class_names)


def _infer(url: str, batch: np.ndarray) -> np.ndarray:
    client = thttp.InferenceServerClient(url)
    try:
        inp = thttp.InferInput("images", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        return client.infer("asl", [inp]).as_numpy("probabilities")
    finally:
        client.close()

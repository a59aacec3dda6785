"""Images/s of each variant served by the local Triton at a fixed concurrency.

The variants go into a temporary model repository made by the project's own generator (one
plain model per variant, ``<name>_<variant>``, as any other served version would be), the local
``tritonserver`` is started on free loopback ports, and each model is sent a bounded number of
one-sample requests from real test-split inputs, ``concurrency`` of them in flight at any time
(tritonclient's HTTP ``async_infer``). Models are driven one after another, so they do not
compete for the CPU. Served answers are checked against onnxruntime's in this process.

For the landmark classifier the figure is the classifier alone (landmark rows in), not the hand
pipeline in front of it: the variants differ only in the classifier.
"""

from __future__ import annotations

import collections
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

WARMUP_REQUESTS = 4
READY_SECONDS = 120.0

Feeds = Callable[[np.ndarray], dict[str, np.ndarray]]


def _inputs(tc: Any, feeds: dict[str, np.ndarray]) -> list[Any]:
    from tritonclient.utils import np_to_triton_dtype

    made = []
    for name, array in feeds.items():
        tensor = tc.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        made.append(tensor)
    return made


def drive(
    url: str,
    model: str,
    output: str,
    samples: np.ndarray,
    feeds: Feeds,
    requests: int,
    concurrency: int,
) -> dict[str, Any]:
    """Send ``requests`` one-sample requests, ``concurrency`` in flight; images/s and answers."""
    import tritonclient.http as tc

    client = tc.InferenceServerClient(url, concurrency=concurrency)
    wanted = [tc.InferRequestedOutput(output)]
    try:
        for i in range(WARMUP_REQUESTS):
            client.infer(model, _inputs(tc, feeds(samples[i % len(samples)][None])))
        pending: collections.deque = collections.deque()
        answers = np.zeros(requests, dtype=np.int64)
        started = time.perf_counter()
        for i in range(requests + concurrency):
            if i < requests:
                sample = _inputs(tc, feeds(samples[i % len(samples)][None]))
                pending.append((i, client.async_infer(model, sample, outputs=wanted)))
            if len(pending) == concurrency or (i >= requests and pending):
                index, request = pending.popleft()
                answers[index] = int(request.get_result().as_numpy(output)[0].argmax())
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    return {
        "images_per_second": round(requests / elapsed, 1),
        "requests": requests,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "_answers": answers,
    }


def serve_and_drive(
    models: Mapping[str, Path],
    classes_path: str | Path,
    samples: np.ndarray,
    feeds: Feeds,
    requests: int,
    concurrency: int,
    log_dir: Path,
    name: str = "asl",
) -> dict[str, dict[str, Any]]:
    """Each variant served by one local Triton and driven in turn (see the module docstring)."""
    from asl_recognition.netutil import free_port
    from asl_recognition.serving.launcher import TritonServer
    from asl_recognition.serving.onnx_introspect import read_signature
    from asl_recognition.serving.repository import build_repository

    result: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="asl-optimize-triton-") as tmp:
        repo = Path(tmp) / "repo"
        served = {}
        for variant, path in models.items():
            built = build_repository(
                path, classes_path, repo, model_name=f"{name}_{variant}", ensemble=False
            )
            served[variant] = (built["onnx_model"], read_signature(path).outputs[0].name)
        ports = {key: free_port() for key in ("http_port", "grpc_port", "metrics_port")}
        log = log_dir / "triton_throughput.log"
        server = TritonServer(repo, model_control_mode="none", log_path=log, **ports)
        server.start()
        try:
            server.wait_ready(READY_SECONDS)
            for variant, (model, output) in served.items():
                result[variant] = drive(
                    server.http_url, model, output, samples, feeds, requests, concurrency
                )
        finally:
            server.stop()
    return result

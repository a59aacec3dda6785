"""Images/s of each variant served by the local Triton at a fixed concurrency.

The variants go into a temporary model repository made by the project's own generator (one
plain model per variant, ``<name>_<variant>``, as any other served version would be), the local
``tritonserver`` is started on free loopback ports, and each model is sent a bounded number of
one-sample requests from real test-split inputs, ``concurrency`` of them in flight at any time
(tritonclient's HTTP ``async_infer``). One model is driven at a time, so they do not compete for
the CPU, in interleaved rounds (the order rotated each round). Served answers are checked against
onnxruntime's in this process.

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

WARMUP_REQUESTS = 8
ROUNDS = 4
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
    client: Any,
    model: str,
    output: str,
    samples: np.ndarray,
    feeds: Feeds,
    first: int,
    count: int,
    in_flight: int,
) -> tuple[np.ndarray, float]:
    """Requests ``first .. first+count-1`` (sample ``i % len(samples)`` each), ``in_flight`` at
    once; their top-1 answers and the seconds they took."""
    import tritonclient.http as tc

    wanted = [tc.InferRequestedOutput(output)]
    pending: collections.deque = collections.deque()
    answers = np.zeros(count, dtype=np.int64)
    started = time.perf_counter()
    for i in range(count + in_flight):
        if i < count:
            sample = _inputs(tc, feeds(samples[(first + i) % len(samples)][None]))
            pending.append((i, client.async_infer(model, sample, outputs=wanted)))
        if len(pending) == in_flight or (i >= count and pending):
            index, request = pending.popleft()
            answers[index] = int(request.get_result().as_numpy(output)[0].argmax())
    return answers, time.perf_counter() - started


def drive_interleaved(
    url: str,
    served: Mapping[str, tuple[str, str]],
    samples: np.ndarray,
    feeds: Feeds,
    requests: int,
    concurrency: int,
) -> dict[str, dict[str, Any]]:
    """Every variant driven in ``ROUNDS`` slices, the order rotated each round (as the
    in-process timing does), so a burst of load from other processes hits all alike."""
    import tritonclient.http as tc

    names = list(served)
    cuts = np.linspace(0, requests, min(ROUNDS, requests) + 1).astype(int)
    answers = {name: [] for name in names}
    seconds = dict.fromkeys(names, 0.0)
    client = tc.InferenceServerClient(url, concurrency=concurrency)
    try:
        for name, (model, _) in served.items():
            for i in range(WARMUP_REQUESTS):
                client.infer(model, _inputs(tc, feeds(samples[i % len(samples)][None])))
        for r, (first, last) in enumerate(zip(cuts[:-1], cuts[1:])):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                model, output = served[name]
                part, took = drive(
                    client, model, output, samples, feeds, first, last - first, concurrency
                )
                answers[name].append(part)
                seconds[name] += took
    finally:
        client.close()
    return {
        name: {
            "images_per_second": round(requests / seconds[name], 1),
            "requests": requests,
            "concurrency": concurrency,
            "rounds": len(cuts) - 1,
            "seconds": round(seconds[name], 3),
            "_answers": np.concatenate(answers[name]),
        }
        for name in names
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
    from asl_recognition.serving.onnx_introspect import read_signature
    from asl_recognition.serving.repository import build_repository
    from asl_recognition.serving.triton_server import TritonServer

    with tempfile.TemporaryDirectory(prefix="asl-optimize-triton-") as tmp:
        repo = Path(tmp) / "repo"
        served = {}
        for variant, path in models.items():
            built = build_repository(
                path, classes_path, repo, model_name=f"{name}_{variant}", ensemble=False
            )
            served[variant] = (built["onnx_model"], read_signature(path).outputs[0].name)
        log = log_dir / "triton_throughput.log"
        server = TritonServer.on_free_ports(repo, model_control_mode="none", log_path=log)
        with server.start_ready(READY_SECONDS):
            return drive_interleaved(
                server.http_url, served, samples, feeds, requests, concurrency
            )

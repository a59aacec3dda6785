"""Score and time model variants side by side with onnxruntime, in this process.

Timing is interleaved: every round runs each variant once per batch size, in an order rotated
round by round, so a burst of load from other processes on a shared CPU hits all variants
alike; the figure kept is the median over rounds. Each timed sample repeats the call until it
lasts a few milliseconds, so the timer's resolution does not dominate at batch 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asl_recognition.training import evaluate
from asl_recognition.training.metrics import confusion_matrix, summarise

INPUT_NAME = "images"
EVAL_BATCH = 64
Feeds = Callable[[np.ndarray], dict[str, np.ndarray]]


def image_feeds(batch: np.ndarray) -> dict[str, np.ndarray]:
    """The CNN's feeds: the batch itself as ``images``."""
    return {INPUT_NAME: np.ascontiguousarray(batch)}


SAMPLE_SECONDS = 0.005
MAX_REPEATS = 200


def open_session(path: str | Path, threads: int = 0) -> tuple[Any, float]:
    """A CPU session with onnxruntime's default optimisation, and how long it took to load."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    started = time.perf_counter()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session, (time.perf_counter() - started) * 1000.0


def run_probabilities(
    session: Any, images: np.ndarray, feeds: Feeds = image_feeds, batch: int = EVAL_BATCH
) -> np.ndarray:
    """The model's output over all samples (``feeds`` makes a batch the graph's inputs)."""
    output = session.get_outputs()[0].name
    parts = [
        session.run([output], feeds(images[i : i + batch]))[0]
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)


def score(probabilities: np.ndarray, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Accuracy and macro-F1 of the top-1 answers (torchmetrics, as training scores them)."""
    preds = torch.from_numpy(probabilities.argmax(1)).to(torch.int64)
    result = summarise(preds, labels, num_classes)
    result["images"] = int(labels.numel())
    result["confusion_matrix"] = confusion_matrix(preds, labels, num_classes).tolist()
    return result


def score_groups(
    probabilities: np.ndarray, labels: torch.Tensor, groups: Sequence[str], classes: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Each held-out group (another signer or source) scored on its own, as training does."""
    preds = torch.from_numpy(probabilities.argmax(1)).to(torch.int64)
    return evaluate.score_groups(preds, labels, groups, classes)


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How far a variant's answers are from fp32's: top-1 agreement and largest difference."""
    if len(reference) == 0:
        return {"top1_agreement": float("nan"), "max_abs_diff": float("nan")}
    return {
        "top1_agreement": float((reference.argmax(1) == other.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(reference - other).max()),
    }


def _batch(images: np.ndarray, size: int) -> np.ndarray:
    """``size`` images, repeating the pool when it is smaller."""
    index = np.arange(size) % len(images)
    return np.ascontiguousarray(images[index])


def _repeats(session: Any, feed: dict[str, np.ndarray]) -> int:
    """Calls per timed sample so that one sample lasts about ``SAMPLE_SECONDS``."""
    output = session.get_outputs()[0].name
    best = math.inf
    for _ in range(3):  # warm-up runs; the fastest one sizes the sample
        started = time.perf_counter()
        session.run([output], feed)
        best = min(best, time.perf_counter() - started)
    return int(min(MAX_REPEATS, max(1, math.ceil(SAMPLE_SECONDS / max(best, 1e-7)))))


def time_interleaved(
    sessions: Mapping[str, Any],
    images: np.ndarray,
    batch_sizes: Sequence[int],
    rounds: int,
    make_feeds: Feeds = image_feeds,
) -> dict[str, dict[str, Any]]:
    """Median ms/image of every variant at every batch size, measured in interleaved rounds."""
    names = list(sessions)
    outputs = {name: sessions[name].get_outputs()[0].name for name in names}
    feeds = {b: make_feeds(_batch(images, b)) for b in batch_sizes}
    repeats = {}
    for b in batch_sizes:
        for name in names:
            _repeats(sessions[name], feeds[b])  # warm every variant up
        repeats[b] = _repeats(sessions[names[0]], feeds[b])
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes} for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for b in batch_sizes:
            for name in order:
                started = time.perf_counter()
                for _ in range(repeats[b]):
                    sessions[name].run([outputs[name]], feeds[b])
                elapsed = time.perf_counter() - started
                samples[name][b].append(elapsed * 1000.0 / (repeats[b] * b))
    return {
        name: {
            str(b): {
                "ms_per_image": float(np.median(samples[name][b])),
                "p90_ms_per_image": float(np.percentile(samples[name][b], 90)),
                "rounds": rounds,
                "calls_per_sample": repeats[b],
            }
            for b in batch_sizes
        }
        for name in names
    }


def ratios(latency: Mapping[str, Mapping[str, Any]], reference: str = "fp32") -> dict[str, Any]:
    """Each variant's median ms/image over the reference's, per batch size."""
    base = latency[reference]
    return {
        name: {b: round(v["ms_per_image"] / base[b]["ms_per_image"], 3) for b, v in per.items()}
        for name, per in latency.items()
    }

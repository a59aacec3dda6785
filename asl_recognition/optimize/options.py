"""The options of ``tasks/optimize_model.py`` and ``tasks/predict.py``, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from asl_recognition.options import MAX_SEED, option

GRAPH_LEVELS = ("basic", "extended", "all")
RUNTIMES = ("torch", "onnx", "triton")


@dataclass
class OptimizeOptions:
    """Build INT8 and graph-optimised variants of a model, compare them with fp32, register."""

    model_id: str | None = option(
        None, "registry id of the fp32 model, or 'production'", required=True
    )
    name: str = option("asl", "registered model name ('production' resolves within it)")
    calibration_images: int = option(
        200, "TRAIN-split images the INT8 calibration reads (a seeded sample)", low=1
    )
    per_channel: str = option(
        "auto",
        "INT8 weight scales: on (one per output channel), off (one per tensor), auto (both "
        "built, per-channel kept unless per-tensor scores higher on the val split)",
        choices=("auto", "on", "off"),
    )
    graph_level: str = option(
        "extended",
        "ORT optimisation level saved to disk (all adds CPU-specific layout fusions that may not "
        "load on another machine)",
        choices=GRAPH_LEVELS,
    )
    rounds: int = option(
        20, "timing rounds; each runs every variant once per batch size, in turn", low=1
    )
    batch_sizes: list[int] = option([1, 32], "batch sizes timed (ms/image)", low=1)
    threads: int = option(
        0, "onnxruntime intra-op threads for timing (0 = onnxruntime's default)", low=0
    )
    seed: int = option(0, "seed of the calibration sample", low=0, high=MAX_SEED)
    triton_requests: int = option(
        200,
        "one-sample requests sent to each variant served by the local Triton, for images/s "
        "(0 = skip; the report says it was skipped, as it does where requirements-serving.txt "
        "is not installed, e.g. on an agent)",
        low=0,
    )
    triton_concurrency: int = option(8, "Triton requests in flight at once", low=1)
    profile: bool = option(
        True, "save a torch.profiler trace of one training step and an ORT request profile"
    )
    register: bool = option(True, "register each variant as a model version (parent = fp32)")
    output_dir: str | None = option(
        None,
        "where report.json/report.md and the variants go (empty: <workspace>/optimize/..)",
        path=True,
        written=True,
    )
    registry: str = option(
        "auto",
        "registry backend (auto: ClearML with a server, local without)",
        choices=("auto", "local", "clearml"),
    )


@dataclass
class PredictOptions:
    """Classify images with the registered model through torch, onnxruntime or Triton."""

    image: list[str] = option([], "image file(s) to classify", required=True, path=True)
    runtime: str = option(
        "onnx",
        "what runs the model (onnx runs a landmark classifier's hand pipeline here first; "
        "torch runs image classifiers only)",
        choices=RUNTIMES,
    )
    model_id: str = option("production", "registry id, or 'production' (torch and onnx)")
    name: str = option("asl", "registered model name ('production' resolves within it)")
    checkpoint: str | None = option(
        None,
        "torch: the training run's best.pt (empty: found by the model's ONNX hash among "
        "<workspace>/runs/*)",
        path=True,
    )
    url: str | None = option(None, "triton: HOST:PORT (empty: localhost:8000, grpc :8001)")
    protocol: str = option("http", "triton protocol", choices=("http", "grpc"))
    served_model: str = option("asl", "triton: served model name")
    top_k: int = option(3, "classes listed per image", low=1)
    registry: str = option(
        "auto",
        "registry backend (auto: ClearML with a server, local without)",
        choices=("auto", "local", "clearml"),
    )

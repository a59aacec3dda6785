"""The options of ``tasks/build_triton_repo.py``, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from asl_recognition.options import option


@dataclass
class BuildTritonRepoOptions:
    """Write (or update) the Triton model repository for a trained model.

    The model comes from exactly one source: a training task, a registry id (or 'production'),
    or a local ONNX file with its class list.
    """

    model_id: str | None = option(None, "model registry id, or 'production' for the promoted one")
    train_task: str | None = option(None, "ClearML training task id (its artifacts)")
    onnx: str | None = option(None, "local model.onnx (with --classes)", path=True)
    classes: str | None = option(None, "local classes.txt (with --onnx)", path=True)
    repo: str | None = option(
        None, "repository folder (empty: <workspace>/triton_repo)", path=True, written=True
    )
    require_production: bool = option(
        False,
        "build the registry model only if it is still production when the build's turn comes "
        "(the pipeline sets it: a model another run promoted over since its select_best is not "
        "built)",
    )
    model_name: str = option("asl", "name clients call")
    max_batch_size: int = option(32, "largest batch Triton forms", low=1)
    instances: int = option(1, "model instances (instance_group)", low=1)
    hand_instances: int = option(
        1,
        "CPU instances of the hand pipeline step (<name>_hands) of a landmark classifier; one "
        "image at a time each, so about one per core for throughput",
        low=1,
    )
    hand_queue_timeout_s: float = option(
        30.0,
        "seconds a request may wait for a hand-step instance before Triton rejects it, with "
        "dynamic batching (0: for ever); the front answers 504 after 30 s, and work for clients "
        "that had given up ran on, minutes of it",
        low=0.0,
    )
    instance_kind: str = option(
        "cpu", "where the ONNX model's instances run (instance_group kind)", choices=("cpu", "gpu")
    )
    tensorrt: bool = option(False, "add the TensorRT GPU accelerator (needs --instance-kind gpu)")
    keep_versions: int = option(
        2,
        "versions kept on disk (rollback = delete the newest); behind the ensemble or with "
        "--tensorrt Triton serves only the newest, without the ensemble all of them",
        low=1,
    )
    ensemble: bool = option(
        True, "serve the ONNX model behind an ensemble with the model-metrics step"
    )
    dynamic_batching: bool = option(True, "let Triton batch concurrent requests")
    max_queue_delay_us: int = option(500, "dynamic batching max queue delay", low=0)
    low_confidence_threshold: float = option(
        0.5,
        "top-1 confidence under which asl_low_confidence_total counts a prediction",
        low=0.0,
        high=1.0,
    )
    upload: bool = option(
        True,
        "with a ClearML server, upload the repository as the task artifact 'triton_repo' so "
        "that another machine can serve it",
    )

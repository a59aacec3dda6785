"""Build the faster variants of an fp32 ONNX classifier and register them beside it.

Both exported contracts are handled: the CNN (uint8 ``images`` [N,3,S,S]) and the landmark
classifier (float ``FEATURES`` [N,63] + ``HAND_FOUND`` [N,1], fed by the hand pipeline). A
sample is one array row either way (an image, or a landmark row of 64 values) and
:class:`GraphInputs` turns a batch of them into the graph's feeds.

INT8 is onnxruntime's static QDQ quantisation calibrated on a seeded sample of the model's own
TRAIN split (never val/test, which score it). "optimized" is the graph onnxruntime would build
at session start, saved once (``SessionOptions.optimized_model_filepath``) so that a server
loads it without re-optimising; ``extended`` is the default level because ``all`` adds
layout fusions specific to this CPU, which onnxruntime's docs warn may not run elsewhere.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from asl_recognition.registry.base import (
    MODEL_KEYWORDS,
    ModelNotFoundError,
    ModelRecord,
    ModelRegistry,
    NewModel,
    check_model_id,
)
from asl_recognition.training.architectures import IMAGES, LANDMARKS
from asl_recognition.training.export import LANDMARK_INPUTS
from asl_recognition.training.landmark_model import FEATURES as LANDMARK_FEATURES

INPUT_NAME = "images"
CALIBRATION_BATCH = 32
VARIANT_FILES = {"int8": "model.int8.onnx", "optimized": "model.optimized.onnx"}
CLAIM_NAME = ".optimize-run"  # created once, exclusively, by the run that writes the folder


class OptimizeError(ValueError):
    """A model or dataset this step cannot work on; the message is one line."""


def claim_out_dir(path: Path) -> None:
    """Make ``path`` this run's alone: two runs given one --output-dir both found it empty, then
    wrote over each other's variants and reports (a variant registered with the other's file)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path / CLAIM_NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        raise OptimizeError(f"output dir {path} is another optimize run's") from None


@dataclass
class Calibration:
    """The TRAIN samples INT8 calibration read (images, or landmark rows), recorded with the
    variant: ``paths`` name them (the image's path in the dataset, the landmark row's photo)."""

    images: np.ndarray  # uint8 [N,3,S,S] images or float32 [N,64] landmark rows
    paths: list[str] = field(default_factory=list)
    split: str = "train"
    seed: int = 0
    source: str | None = None  # the dataset version the samples were read from

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "count": len(self.paths),
            "seed": self.seed,
            "source": self.source,
            "paths": self.paths,
        }


def model_record_for(registry: ModelRegistry, model_id: str, name: str = "asl") -> ModelRecord:
    """The record of ``model_id``; ``production`` is the model tagged production in ``name``."""
    try:
        if model_id != "production":
            return registry.get(check_model_id(model_id, MODEL_KEYWORDS))
        record = registry.production(name)
    except ModelNotFoundError as exc:  # unknown, not an id, or its files fail their sha256
        raise OptimizeError(str(exc)) from None
    if record is None:
        raise OptimizeError(f"no production model of {name!r} in the registry yet")
    return record


@dataclass(frozen=True)
class GraphInputs:
    """Which contract a graph has, and how a batch of samples becomes its feeds."""

    graph_type: str  # IMAGES or LANDMARKS
    image_size: int = 0  # the CNN's square side; 0 for the landmark classifier

    def feeds(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.graph_type == LANDMARKS:
            features, found = LANDMARK_INPUTS
            return {
                features: np.ascontiguousarray(batch[:, :LANDMARK_FEATURES], dtype=np.float32),
                found: np.ascontiguousarray(batch[:, LANDMARK_FEATURES:], dtype=np.float32),
            }
        return {INPUT_NAME: np.ascontiguousarray(batch)}


def _dims(value: Any) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def graph_inputs(onnx_path: str | Path) -> GraphInputs:
    """The contract of ``onnx_path``'s inputs; refuses a graph that has neither."""
    from asl_recognition.serving.onnx_introspect import load_model

    graph = load_model(onnx_path, error=OptimizeError).graph
    inputs = {i.name: i for i in graph.input}
    if set(inputs) == set(LANDMARK_INPUTS):
        features, found = (_dims(inputs[name])[1:] for name in LANDMARK_INPUTS)
        if features != [LANDMARK_FEATURES] or found != [1]:
            raise OptimizeError(
                f"{onnx_path}: landmark inputs {features}/{found}, not "
                f"[N,{LANDMARK_FEATURES}]/[N,1]"
            )
        return GraphInputs(LANDMARKS)
    if INPUT_NAME not in inputs:
        names = ", ".join(inputs) or "none"
        raise OptimizeError(
            f"{onnx_path}: inputs {names}; neither an image classifier (input {INPUT_NAME!r} "
            f"uint8 [N,3,S,S]) nor the landmark classifier ({', '.join(LANDMARK_INPUTS)})"
        )
    dims = _dims(inputs[INPUT_NAME])
    if len(dims) != 4 or dims[1] != 3 or not dims[2] or dims[2] != dims[3]:
        raise OptimizeError(f"{onnx_path}: input {INPUT_NAME} has shape {dims}, not [N,3,S,S]")
    return GraphInputs(IMAGES, int(dims[2]))


def sample_calibration(
    images: np.ndarray, paths: Sequence[str], count: int, seed: int
) -> Calibration:
    """A seeded sample of ``count`` train samples (all of them when there are fewer)."""
    if len(images) == 0:
        raise OptimizeError("the train split holds no samples to calibrate INT8 with")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False))
    return Calibration(images[chosen], [paths[i] for i in chosen], seed=seed)


class BatchReader(CalibrationDataReader):
    """onnxruntime's ``CalibrationDataReader`` protocol over in-memory batches of samples."""

    def __init__(
        self, images: np.ndarray, inputs: GraphInputs, batch: int = CALIBRATION_BATCH
    ) -> None:
        self.images = images
        self.inputs = inputs
        self.batch = batch
        self._batches: Iterator[dict[str, np.ndarray]] | None = None

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.images), self.batch):
            yield self.inputs.feeds(self.images[start : start + self.batch])

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:
            self._batches = self._iterate()
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = None


def quantize_int8(
    source: str | Path,
    target: str | Path,
    calibration: Calibration,
    per_channel: bool = True,
    inputs: GraphInputs | None = None,
) -> dict[str, Any]:
    """Static QDQ INT8 (activations uint8, weights int8), after onnxruntime's pre-processing.

    Returns the settings, kept with the variant so the quantisation can be repeated.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    settings = {
        "format": "QDQ",
        "activation_type": "QUInt8",
        "weight_type": "QInt8",
        "per_channel": per_channel,
        "calibrate_method": "MinMax",
        "pre_processed": True,
    }
    with tempfile.TemporaryDirectory(prefix="asl-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference and constant folding first: the quantiser needs every tensor's shape
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        import onnx

        # the output stays float: a quantised Softmax would round probabilities to 1/255 steps
        softmax = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Softmax"]
        settings["nodes_excluded"] = softmax
        quantize_static(
            str(prepared),
            str(target),
            BatchReader(calibration.images, inputs or graph_inputs(source)),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=softmax,
        )
    return settings


GRAPH_LEVEL_NAMES = {
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def optimize_graph(
    source: str | Path, target: str | Path, level: str = "extended"
) -> dict[str, Any]:
    """Save the graph onnxruntime builds at ``level`` to ``target`` (CPU provider)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_LEVEL_NAMES[level])
    opts.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
    if not Path(target).is_file():
        raise OptimizeError(f"onnxruntime wrote no optimised model to {target}")
    return {
        "graph_optimization_level": GRAPH_LEVEL_NAMES[level],
        "provider": "CPUExecutionProvider",
    }


def register_variant(
    registry: ModelRegistry,
    parent: ModelRecord,
    variant: str,
    onnx_path: str | Path,
    metrics: dict[str, Any],
    details: dict[str, Any],
    task: Any = None,
) -> ModelRecord:
    """A new version of the parent's model name, its parent the fp32 model (natively in the
    registry; ``parent`` in params too, for readers of records made before ``parent_id``)."""
    params = {
        **parent.params,
        "variant": variant,
        "parent": parent.id,
        "parent_version": parent.version,
        "optimization": details,
    }
    model = NewModel(
        name=parent.name,
        onnx_path=str(onnx_path),
        classes_path=parent.classes_path,
        metrics=metrics,
        params=params,
        dataset_id=parent.dataset_id,
        baseline_path=parent.baseline_path,
        parent_id=parent.id,
        tags=(variant,),
    )
    return registry.register(model, task=task)

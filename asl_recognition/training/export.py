"""ONNX export with preprocessing inside the graph, and the torch-vs-onnxruntime parity gate.

The classic TorchScript exporter (``dynamo=False``) writes one self-contained file at opset 17
with only the ``onnx`` package; the dynamo exporter needs onnxscript and splits external data.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asl_recognition.training.errors import ParityError
from asl_recognition.training.landmark_model import FEATURES, LandmarkNet
from asl_recognition.training.models import ProbabilityModel

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
# The landmark classifier's contract, which the Triton repository generator recognises.
LANDMARK_INPUTS = ("FEATURES", "HAND_FOUND")
LANDMARK_OUTPUT = "PROBS"
MAX_ABS_DIFF = 1e-4


@dataclass
class Contract:
    """The torch side of an exported graph: module, how a batch becomes its inputs, names."""

    module: nn.Module
    split: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    inputs: tuple[str, ...]
    output: str

    def feeds(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        return {name: t.numpy() for name, t in zip(self.inputs, self.split(batch))}


def contract(classifier: nn.Module) -> Contract:
    """CNN: uint8 images -> probabilities; landmarks: rows -> (FEATURES, HAND_FOUND) -> PROBS."""
    if isinstance(classifier, LandmarkNet):
        return Contract(
            classifier.served().eval().cpu(),
            lambda rows: (rows[:, :FEATURES].contiguous(), rows[:, FEATURES:].contiguous()),
            LANDMARK_INPUTS,
            LANDMARK_OUTPUT,
        )
    return Contract(
        ProbabilityModel(classifier).eval().cpu(),
        lambda images: (images,),
        (INPUT_NAME,),
        OUTPUT_NAME,
    )


def export_onnx(
    classifier: nn.Module,
    path: str | Path,
    image_size: int,
    num_classes: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``path`` with a dynamic batch axis on every input and the output.

    CNN: uint8 ``images`` [N,3,H,W] -> float32 ``probabilities``; landmark net: float32
    ``FEATURES`` [N,63] and ``HAND_FOUND`` [N,1] -> ``PROBS`` [N,C] (its class axis fixed, as
    Triton's configs need). ``metadata`` goes into the model's ``metadata_props``: what travels
    with the file to serving (a landmark net's hand detector settings,
    ``hands.landmarker.DETECTOR_METADATA_KEY``).
    """
    path = Path(path)
    spec = contract(classifier)
    if isinstance(classifier, LandmarkNet):
        dummy = torch.zeros(2, FEATURES + 1)
    else:
        dummy = torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8)
    names = (*spec.inputs, spec.output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classic exporter's DeprecationWarning
        torch.onnx.export(
            spec.module,
            spec.split(dummy),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(spec.inputs),
            output_names=[spec.output],
            dynamic_axes={name: {0: "batch"} for name in names},
            do_constant_folding=True,
        )
    import onnx

    graph = onnx.load(str(path))
    class_axis = graph.graph.output[0].type.tensor_type.shape.dim[1]
    if num_classes and not class_axis.HasField("dim_value"):
        class_axis.Clear()
        class_axis.dim_value = num_classes
    onnx.helper.set_model_props(graph, dict(metadata or {}))
    onnx.save(graph, str(path))
    onnx.checker.check_model(str(path))
    return path


def onnx_session(path: str | Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_parity(
    onnx_path: str | Path,
    classifier: nn.Module,
    images: torch.Tensor,
    batch_size: int = 256,
    tolerance: float = MAX_ABS_DIFF,
) -> dict[str, float | int]:
    """Run every image through both; raise :class:`ParityError` on any drift or top-1 change."""
    if len(images) == 0:
        raise ParityError("parity check needs at least one image")
    session = onnx_session(onnx_path)
    spec = contract(classifier)
    max_diff, mismatched = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].cpu()
            expected = spec.module(*spec.split(batch)).numpy()
            got = session.run([spec.output], spec.feeds(batch))[0]
            if got.dtype != np.float32 or got.shape != expected.shape:
                raise ParityError(f"ONNX output {got.dtype} {got.shape}, torch {expected.shape}")
            if not (np.isfinite(got).all() and np.isfinite(expected).all()):  # max() skips NaN
                raise ParityError(f"the model's outputs are not finite numbers ({onnx_path})")
            max_diff = max(max_diff, float(np.abs(got - expected).max()))
            mismatched += int((got.argmax(1) != expected.argmax(1)).sum())
    result = {"images": int(len(images)), "max_abs_diff": max_diff, "top1_mismatches": mismatched}
    if max_diff > tolerance or mismatched:
        raise ParityError(
            f"ONNX/torch parity failed on {len(images)} images: max abs diff {max_diff:.2e} "
            f"(limit {tolerance:.0e}), {mismatched} top-1 mismatches"
        )
    return result

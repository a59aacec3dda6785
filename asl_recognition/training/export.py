"""ONNX export with preprocessing inside the graph, and the torch-vs-onnxruntime parity gate.

The classic TorchScript exporter (``dynamo=False``) writes one self-contained file at opset 17
with only the ``onnx`` package; the dynamo exporter needs onnxscript and splits external data.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asl_recognition.training.errors import ParityError
from asl_recognition.training.models import ProbabilityModel

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
MAX_ABS_DIFF = 1e-4


def export_onnx(classifier: nn.Module, path: str | Path, image_size: int) -> Path:
    """Write ``path``: uint8 ``images`` [N,3,H,W] (dynamic N) -> float32 ``probabilities``."""
    path = Path(path)
    wrapper = ProbabilityModel(classifier).eval().cpu()
    dummy = torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classic exporter's DeprecationWarning
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    import onnx

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
    wrapper = ProbabilityModel(classifier).eval().cpu()
    max_diff, mismatched = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].cpu()
            expected = wrapper(batch).numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
            if got.dtype != np.float32 or got.shape != expected.shape:
                raise ParityError(f"ONNX output {got.dtype} {got.shape}, torch {expected.shape}")
            max_diff = max(max_diff, float(np.abs(got - expected).max()))
            mismatched += int((got.argmax(1) != expected.argmax(1)).sum())
    result = {"images": int(len(images)), "max_abs_diff": max_diff, "top1_mismatches": mismatched}
    if max_diff > tolerance or mismatched:
        raise ParityError(
            f"ONNX/torch parity failed on {len(images)} images: max abs diff {max_diff:.2e} "
            f"(limit {tolerance:.0e}), {mismatched} top-1 mismatches"
        )
    return result

"""Read a model's serving signature (tensor names, dtypes, dims) from its ONNX graph.

The Triton config is generated from this, never typed by hand, so a model with other classes,
another image size or another architecture gets a matching config automatically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from asl_recognition.training.architectures import IMAGES, LANDMARKS

# ONNX TensorProto element type -> Triton config data type.
ONNX_TO_TRITON: dict[int, str] = {
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.STRING: "TYPE_STRING",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
}


class OnnxSignatureError(ValueError):
    """The ONNX graph cannot be served as described (unknown dtype, no batch dimension, ...)."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. ``dims`` excludes the batch dimension; -1 marks a dynamic dim."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class OnnxSignature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    # The graph's metadata_props: what its training run recorded for serving.
    metadata: tuple[tuple[str, str], ...] = ()

    def key(self) -> tuple:
        """Two models with equal keys can share one Triton config (and so one model directory)."""
        return (self.inputs, self.outputs)


# A landmark classifier takes the hand pipeline's outputs instead of pixels.
LANDMARK_INPUTS = ("FEATURES", "HAND_FOUND")


def graph_type(signature: OnnxSignature) -> str:
    """``LANDMARKS`` for a graph fed by the hand pipeline (inputs FEATURES, HAND_FOUND), else
    ``IMAGES`` (a CNN on pixels): what the architecture registry says its networks read. The
    repository generator lays out each graph type its own way.
    """
    names = sorted(t.name for t in signature.inputs)
    return LANDMARKS if names == sorted(LANDMARK_INPUTS) else IMAGES


def _dims(value_info: onnx.ValueInfoProto) -> list[int]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim]


def _spec(value_info: onnx.ValueInfoProto, path: Path) -> TensorSpec:
    elem = value_info.type.tensor_type.elem_type
    if elem not in ONNX_TO_TRITON:
        raise OnnxSignatureError(
            f"{path}: tensor '{value_info.name}' has ONNX element type {elem}, "
            "which Triton cannot serve"
        )
    dims = _dims(value_info)
    if not dims:
        raise OnnxSignatureError(f"{path}: tensor '{value_info.name}' is a scalar, not a batch")
    if dims[0] != -1:
        raise OnnxSignatureError(
            f"{path}: tensor '{value_info.name}' has a fixed first dimension {dims[0]}; "
            "export with a dynamic batch axis so Triton can batch requests"
        )
    return TensorSpec(value_info.name, ONNX_TO_TRITON[elem], tuple(dims[1:]))


def load_model(
    onnx_path: str | Path, error: type[Exception] = OnnxSignatureError
) -> onnx.ModelProto:
    """The graph of ``onnx_path``; a truncated or corrupted file raises ``error`` in one line
    (onnx lets protobuf's ``DecodeError`` through, a traceback for the user)."""
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(onnx_path), load_external_data=False)
    except (DecodeError, onnx.checker.ValidationError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{onnx_path}: not a readable ONNX model, truncated or corrupted ({reason})")
    except OSError as exc:
        raise error(f"{onnx_path}: cannot be read ({exc.strerror or exc})") from None


def _check_declared_shapes(model: onnx.ModelProto, path: Path) -> None:
    """Refuse a graph whose declared input/output shapes differ from what its nodes compute:
    the configs are written from the declared ones, and a server loading the graph refuses
    (or, worse, serves) a config that does not match what it computes."""
    try:
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OnnxSignatureError(f"{path}: declared shapes differ from the graph's ({reason})")


def read_signature(onnx_path: str | Path) -> OnnxSignature:
    """Inputs/outputs of the graph, with the (required dynamic) batch dimension removed."""
    path = Path(onnx_path)
    model = load_model(path)
    _check_declared_shapes(model, path)
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_spec(v, path) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_spec(v, path) for v in model.graph.output)
    if not inputs or not outputs:
        raise OnnxSignatureError(f"{path}: graph has no inputs or no outputs")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    metadata = tuple((p.key, p.value) for p in model.metadata_props)
    return OnnxSignature(inputs=inputs, outputs=outputs, opset=opset, metadata=metadata)

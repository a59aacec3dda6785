"""Triton ``config.pbtxt`` messages built from a model's ONNX signature: no hand-written config.

Every config field comes from the model: tensor names, data types and dims from the ONNX graph,
labels from the class list. Configs are built as ``model_config_pb2.ModelConfig`` messages and
written with ``text_format``, so a typo is a Python error, not a server-side surprise. Where they
land on disk (atomic, versioned, inside the repository) is :mod:`.repo_files`' job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from asl_recognition.serving.onnx_introspect import OnnxSignature, OnnxSignatureError

LABELS_FILE = "labels.txt"
# Where the GPU image keeps TensorRT engines (a writable volume; the repository is read-only).
DEFAULT_TRT_CACHE_DIR = "/trt_cache"


def load_config(path: str | Path) -> mc.ModelConfig:
    """Parse a config.pbtxt; raises ``text_format.ParseError`` on any unknown field or value."""
    return text_format.Parse(Path(path).read_text(encoding="utf-8"), mc.ModelConfig())


def config_text(config: mc.ModelConfig) -> str:
    """The text ``config.pbtxt`` holds (protobuf text format)."""
    return text_format.MessageToString(config)


def preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two from 4 up to ``max_batch_size`` (and the maximum itself)."""
    sizes = [s for s in (4, 8, 16, 32, 64, 128, 256) if s < max_batch_size]
    return sizes + [max_batch_size] if max_batch_size > 1 else []


def _tensor(
    message_type: Any, name: str, data_type: str, dims: tuple[int, ...], **extra: Any
) -> Any:
    return message_type(name=name, data_type=mc.DataType.Value(data_type), dims=dims, **extra)


def label_outputs(signature: OnnxSignature, classes: list[str], onnx_path: Path) -> set[str]:
    """Outputs whose single non-batch dim equals the class count carry the labels."""
    labelled = {o.name for o in signature.outputs if o.dims == (len(classes),)}
    if not labelled:
        found = ", ".join(f"'{o.name}' {list(o.dims)}" for o in signature.outputs)
        raise OnnxSignatureError(
            f"{onnx_path}: the class list has {len(classes)} names but no output has dims "
            f"[{len(classes)}] (outputs: {found})"
        )
    return labelled


def check_batching(max_batch_size: int) -> int:
    """Refuse ``max_batch_size`` < 1: the graph always has a batch axis (onnx_introspect).

    With 0, every dims list, the ensemble, the metrics step and the client would have to carry
    the batch axis themselves; nothing is gained, since the exported graph batches anyway.
    """
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
        raise ValueError(f"max_batch_size must be an integer, not {max_batch_size!r}")
    if max_batch_size < 1:
        raise ValueError(
            f"max_batch_size must be >= 1 (got {max_batch_size}): the exported model has a "
            "dynamic batch axis, and 0 (no batching) is not supported by this generator"
        )
    return max_batch_size


def _shape_string(spec: OnnxSignature, batch: int) -> str:
    return ",".join(f"{t.name}:" + "x".join(str(d) for d in (batch, *t.dims)) for t in spec.inputs)


def tensorrt_accelerator(
    signature: OnnxSignature, max_batch_size: int, cache_path: str
) -> mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator:
    """TensorRT via ONNX Runtime, with an engine cache and one explicit shape profile.

    The profile covers every batch size Triton can form (1 .. max_batch_size, tuned for the
    largest preferred size), so ONNX Runtime never rebuilds the engine for a new batch size, and
    the cache (keyed by graph and profile) lets a reload or restart reuse the built engine.
    """
    dynamic = [t.name for t in signature.inputs if -1 in t.dims]
    if dynamic:
        raise ValueError(
            f"TensorRT shape profiles need fixed non-batch dims; inputs {dynamic} have "
            "dynamic ones"
        )
    opt = (preferred_batch_sizes(max_batch_size) or [max_batch_size])[-1]
    return mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(
        name="tensorrt",
        parameters={
            "precision_mode": "FP16",
            "max_workspace_size_bytes": "1073741824",
            "trt_engine_cache_enable": "true",
            "trt_engine_cache_path": cache_path,
            "trt_timing_cache_enable": "true",
            "trt_timing_cache_path": cache_path,
            "trt_profile_min_shapes": _shape_string(signature, 1),
            "trt_profile_opt_shapes": _shape_string(signature, opt),
            "trt_profile_max_shapes": _shape_string(signature, max_batch_size),
        },
    )


def warmup_requests(signature: OnnxSignature, max_batch_size: int) -> list[mc.ModelWarmup]:
    """Zero-filled requests at batch 1 and at the maximum, run by Triton before READY."""
    sizes = sorted({1, max_batch_size})
    return [
        mc.ModelWarmup(
            name=f"zeros_batch_{size}",
            batch_size=size,
            inputs={
                t.name: mc.ModelWarmup.Input(
                    data_type=mc.DataType.Value(t.data_type), dims=t.dims, zero_data=True
                )
                for t in signature.inputs
            },
        )
        for size in sizes
    ]


def onnx_model_config(
    name: str,
    signature: OnnxSignature,
    labelled_outputs: set[str],
    *,
    max_batch_size: int,
    instances: int,
    instance_kind: str,
    tensorrt: bool,
    keep_versions: int,
    dynamic_batching: bool,
    max_queue_delay_us: int,
    trt_cache_path: str,
) -> mc.ModelConfig:
    """The ONNX model's config, every tensor field taken from the graph signature.

    ``keep_versions`` is how many versions Triton serves (version_policy latest N).
    """
    if instance_kind not in ("cpu", "gpu"):
        raise ValueError(f"instance_kind must be 'cpu' or 'gpu', not {instance_kind!r}")
    if tensorrt and instance_kind != "gpu":
        raise ValueError(
            "the TensorRT execution accelerator needs GPU instances (instance_kind='gpu')"
        )
    check_batching(max_batch_size)
    if instances < 1 or keep_versions < 1:
        raise ValueError("instances >= 1 and keep_versions >= 1 required")
    config = mc.ModelConfig(
        name=name,
        platform="onnxruntime_onnx",
        max_batch_size=max_batch_size,
        version_policy=mc.ModelVersionPolicy(
            latest=mc.ModelVersionPolicy.Latest(num_versions=keep_versions)
        ),
    )
    for spec in signature.inputs:
        config.input.append(_tensor(mc.ModelInput, spec.name, spec.data_type, spec.dims))
    for spec in signature.outputs:
        extra = {"label_filename": LABELS_FILE} if spec.name in labelled_outputs else {}
        config.output.append(
            _tensor(mc.ModelOutput, spec.name, spec.data_type, spec.dims, **extra)
        )
    if dynamic_batching and max_batch_size > 1:
        config.dynamic_batching.CopyFrom(
            mc.ModelDynamicBatching(
                preferred_batch_size=preferred_batch_sizes(max_batch_size),
                max_queue_delay_microseconds=max_queue_delay_us,
            )
        )
    group_kind = (
        mc.ModelInstanceGroup.KIND_GPU
        if instance_kind == "gpu"
        else mc.ModelInstanceGroup.KIND_CPU
    )
    config.instance_group.append(mc.ModelInstanceGroup(count=instances, kind=group_kind))
    if tensorrt:
        config.optimization.execution_accelerators.gpu_execution_accelerator.append(
            tensorrt_accelerator(signature, max_batch_size, trt_cache_path)
        )
        config.model_warmup.extend(warmup_requests(signature, max_batch_size))
    return config


def metrics_model_config(
    name: str,
    model_label: str,
    probs_dims: tuple[int, ...],
    max_batch_size: int,
    threshold: float,
    hand_found: bool = False,
) -> mc.ModelConfig:
    """The Python-backend pass-through step that exports model-level metrics.

    ``hand_found``: the hand pipeline's flag (counted), box and landmarks, passed through too.
    """
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    config.input.append(_tensor(mc.ModelInput, "probabilities", "TYPE_FP32", probs_dims))
    config.output.append(_tensor(mc.ModelOutput, "probabilities_out", "TYPE_FP32", probs_dims))
    hand_extras = (("hand_found", (1,)), ("hand_box", (4,)), ("landmarks", (21, 3)))
    for extra, dims in hand_extras if hand_found else ():
        config.input.append(_tensor(mc.ModelInput, extra, "TYPE_FP32", dims))
        config.output.append(_tensor(mc.ModelOutput, f"{extra}_out", "TYPE_FP32", dims))
    config.instance_group.append(
        mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    )
    config.parameters["low_confidence_threshold"].string_value = repr(float(threshold))
    config.parameters["model_label"].string_value = model_label
    return config


def ensemble_config(
    name: str, onnx_name: str, metrics_name: str, signature: OnnxSignature, max_batch_size: int
) -> mc.ModelConfig:
    """What clients call: images -> ONNX model -> metrics step -> probabilities."""
    (image,), (probs,) = signature.inputs, signature.outputs
    config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size)
    config.input.append(_tensor(mc.ModelInput, image.name, image.data_type, image.dims))
    config.output.append(
        _tensor(
            mc.ModelOutput, probs.name, probs.data_type, probs.dims, label_filename=LABELS_FILE
        )
    )
    step = mc.ModelEnsembling.Step
    config.ensemble_scheduling.step.extend(
        [
            step(
                model_name=onnx_name,
                model_version=-1,
                input_map={image.name: image.name},
                output_map={probs.name: "onnx_probabilities"},
            ),
            step(
                model_name=metrics_name,
                model_version=-1,
                input_map={"probabilities": "onnx_probabilities"},
                output_map={"probabilities_out": probs.name},
            ),
        ]
    )
    return config

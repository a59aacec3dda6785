"""The Triton layout of a landmark classifier: photo bytes -> hand pipeline -> classifier.

A landmark classifier's ONNX graph takes ``FEATURES`` fp32 [63] and ``HAND_FOUND`` fp32 [1]
(see ``onnx_introspect.graph_type``). Beside its ``<name>_onnx`` and ``<name>_metrics`` models
the generator then writes::

    <repo>/<name>_hands/config.pbtxt, <v>/model.py + the verified hand model files
    <repo>/<name>/config.pbtxt       ensemble: IMAGE -> PROBS, HAND_FOUND, HAND_BOX, LANDMARKS

``<name>_hands`` is a Python-backend model (``hands_model.py``): encoded photo bytes in
(TYPE_STRING [1]), features, hand flag and hand box out; batched and dynamically batched like the
classifier.
Its version folder is staged and renamed into place, and only replaced (as the next version)
when model.py or a model file changes, so a polling server never loads half a model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from asl_recognition.hands.landmarker import DETECTOR_METADATA_KEY, detector_arguments
from asl_recognition.hands.models import ModelFileError, copy_models, verify_models
from asl_recognition.hands.passes import DEFAULT_MIN_DETECTION, DEFAULT_MIN_PRESENCE
from asl_recognition.serving.onnx_introspect import (
    LANDMARK_INPUTS,
    OnnxSignature,
    OnnxSignatureError,
    TensorSpec,
)
from asl_recognition.serving.repo_files import STAGING_PREFIX

HANDS_MODEL_SOURCE = Path(__file__).with_name("hands_model.py")
IMAGE_INPUT = "IMAGE"
HAND_OUTPUTS = (
    ("FEATURES", (63,)),
    ("HAND_FOUND", (1,)),
    ("HAND_BOX", (4,)),
    ("LANDMARKS", (21, 3)),  # in the upright photo's pixels: what the live page draws
)
NOTHING = "nothing"
# The most bytes one photo may have; the client refuses bigger files before sending them.
MAX_IMAGE_BYTES = 25 * 1024 * 1024
# The data stage's thresholds (HandLandmarker's defaults), so served features equal the table's.
DEFAULT_HAND_PARAMETERS = {
    "min_detection": DEFAULT_MIN_DETECTION,
    "min_presence": DEFAULT_MIN_PRESENCE,
    "num_threads": 1,
}


def recorded_detector(signature: OnnxSignature, onnx_path: Path) -> dict[str, Any] | None:
    """The hand detector settings the classifier's training table was measured with, or None
    for a graph exported before models carried them (served with the package's defaults).

    Refused here, before anything is written, when they cannot be reproduced: a served hand step
    that measures photos unlike the table would feed the classifier points it never saw.
    """
    text = dict(signature.metadata).get(DETECTOR_METADATA_KEY)
    if text is None:
        return None
    try:
        settings = json.loads(text)
        if not isinstance(settings, dict):
            raise ValueError(f"expected a JSON object, got {type(settings).__name__}")
        detector_arguments(settings)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise OnnxSignatureError(
            f"{onnx_path}: metadata {DETECTOR_METADATA_KEY} cannot be served: {exc}"
        ) from exc
    return settings


def check_landmark_classifier(
    signature: OnnxSignature, classes: list[str], onnx_path: Path
) -> TensorSpec:
    """Refuse a graph the hand pipeline cannot feed; return its probabilities output."""
    expected = {"FEATURES": (63,), "HAND_FOUND": (1,)}
    for spec in signature.inputs:
        if spec.data_type != "TYPE_FP32" or spec.dims != expected[spec.name]:
            raise OnnxSignatureError(
                f"{onnx_path}: input '{spec.name}' is {spec.data_type} {list(spec.dims)}; the "
                f"hand pipeline sends TYPE_FP32 {list(expected[spec.name])}"
            )
    if len(signature.outputs) != 1 or signature.outputs[0].dims != (len(classes),):
        found = ", ".join(f"'{o.name}' {list(o.dims)}" for o in signature.outputs)
        raise OnnxSignatureError(
            f"{onnx_path}: a landmark classifier needs one output of dims [{len(classes)}] "
            f"(got {found})"
        )
    if NOTHING not in classes:
        raise OnnxSignatureError(
            f"{onnx_path}: the class list has no '{NOTHING}', the answer for photos without a hand"
        )
    return signature.outputs[0]


def _tensor(message_type, name: str, data_type: str, dims: tuple[int, ...], **extra):
    return message_type(name=name, data_type=mc.DataType.Value(data_type), dims=dims, **extra)


def hands_model_config(
    name: str,
    max_batch_size: int,
    instances: int = 1,
    dynamic_batching: bool = True,
    preferred: list[int] | None = None,
    max_queue_delay_us: int = 500,
    detector: Mapping[str, Any] | None = None,
    queue_timeout_s: float = 0.0,
) -> mc.ModelConfig:
    """The Python-backend hand pipeline: one photo's bytes per row in, features out.

    ``detector``: the classifier's recorded hand detector settings (:func:`recorded_detector`),
    written as the ``detector`` parameter that ``hands_model.py`` builds its landmarker from.
    ``queue_timeout_s`` (> 0, with dynamic batching): a request that waited longer for an
    instance is rejected when its turn comes, not worked on for a client that gave up.
    """
    if instances < 1:
        raise ValueError(f"hand_instances must be >= 1 (got {instances})")
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=max_batch_size,
        version_policy=mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1)),
    )
    config.input.append(_tensor(mc.ModelInput, IMAGE_INPUT, "TYPE_STRING", (1,)))
    for output, dims in HAND_OUTPUTS:
        config.output.append(_tensor(mc.ModelOutput, output, "TYPE_FP32", dims))
    if dynamic_batching and max_batch_size > 1:
        config.dynamic_batching.CopyFrom(
            mc.ModelDynamicBatching(
                preferred_batch_size=preferred or [],
                max_queue_delay_microseconds=max_queue_delay_us,
            )
        )
        if queue_timeout_s > 0:
            config.dynamic_batching.default_queue_policy.CopyFrom(
                mc.ModelQueuePolicy(
                    timeout_action=mc.ModelQueuePolicy.REJECT,
                    default_timeout_microseconds=round(queue_timeout_s * 1e6),
                )
            )
    config.instance_group.append(
        mc.ModelInstanceGroup(count=instances, kind=mc.ModelInstanceGroup.KIND_CPU)
    )
    parameters = {**DEFAULT_HAND_PARAMETERS, "max_image_bytes": MAX_IMAGE_BYTES}
    if detector is not None:  # its thresholds shown as the plain parameters too: one story
        parameters.update({k: detector[k] for k in DEFAULT_HAND_PARAMETERS if k in detector})
        parameters["detector"] = json.dumps(dict(detector), sort_keys=True)
    for key, value in parameters.items():
        config.parameters[key].string_value = str(value)
    return config


def hands_ensemble_config(
    name: str,
    hands_name: str,
    onnx_name: str,
    metrics_name: str,
    probs: TensorSpec,
    max_batch_size: int,
    labels_file: str,
) -> mc.ModelConfig:
    """What clients call: IMAGE -> hands -> classifier -> metrics step -> PROBS (+ hand)."""
    config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size)
    config.input.append(_tensor(mc.ModelInput, IMAGE_INPUT, "TYPE_STRING", (1,)))
    config.output.append(
        _tensor(
            mc.ModelOutput, probs.name, probs.data_type, probs.dims, label_filename=labels_file
        )
    )
    for output, dims in HAND_OUTPUTS[1:]:
        config.output.append(_tensor(mc.ModelOutput, output, "TYPE_FP32", dims))
    features, found = LANDMARK_INPUTS
    step = mc.ModelEnsembling.Step
    config.ensemble_scheduling.step.extend(
        [
            step(
                model_name=hands_name,
                model_version=-1,
                input_map={IMAGE_INPUT: IMAGE_INPUT},
                output_map={
                    features: "hand_features",
                    found: "hand_found",
                    "HAND_BOX": "hand_box",
                    "LANDMARKS": "hand_landmarks",
                },
            ),
            step(
                model_name=onnx_name,
                model_version=-1,
                input_map={features: "hand_features", found: "hand_found"},
                output_map={probs.name: "onnx_probabilities"},
            ),
            # Every ensemble output comes out of the metrics step, so it runs (and counts) for
            # any set of requested outputs.
            step(
                model_name=metrics_name,
                model_version=-1,
                input_map={
                    "probabilities": "onnx_probabilities",
                    "hand_found": "hand_found",
                    "hand_box": "hand_box",
                    "landmarks": "hand_landmarks",
                },
                output_map={
                    "probabilities_out": probs.name,
                    "hand_found_out": found,
                    "hand_box_out": "HAND_BOX",
                    "landmarks_out": "LANDMARKS",
                },
            ),
        ]
    )
    return config


def _version_current(version_dir: Path) -> bool:
    """The folder holds today's model.py and every verified model file."""
    try:
        verify_models(version_dir)
    except ModelFileError:
        return False
    model_py = version_dir / "model.py"
    return model_py.is_file() and model_py.read_bytes() == HANDS_MODEL_SOURCE.read_bytes()


def publish_hands_version(
    hands_dir: Path,
    versions: list[int],
    models_source: str | Path | None = None,
    after: int = 0,
) -> tuple[int, list[int]]:
    """Reuse the newest version when current, else stage the next one; drop all others.

    Returns the served version and the versions removed. ``models_source`` is the verified hand
    model folder (default: ``hands.models.models_dir()``); a new version numbers after ``after``
    too (versions removed just before, so numbers never repeat).
    """
    newest = versions[-1] if versions else 0
    if newest and _version_current(hands_dir / str(newest)):
        version = newest
    else:
        version = max(newest, after) + 1
        hands_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=hands_dir, prefix=f"{STAGING_PREFIX}{version}-"))
        try:
            copy_models(staging, models_source)
            shutil.copyfile(HANDS_MODEL_SOURCE, staging / "model.py")
            # A plain file named __pycache__ keeps the stub from writing bytecode here.
            (staging / "__pycache__").write_bytes(b"")
            for path in staging.iterdir():
                os.chmod(path, 0o644)
            os.chmod(staging, 0o755)
            os.rename(staging, hands_dir / str(version))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    removed = [v for v in versions if v != version]
    return version, removed


__all__ = [
    "HANDS_MODEL_SOURCE",
    "MAX_IMAGE_BYTES",
    "check_landmark_classifier",
    "hands_ensemble_config",
    "hands_model_config",
    "publish_hands_version",
]

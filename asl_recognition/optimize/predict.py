"""One answer format for three runtimes: the training checkpoint in torch, the registered ONNX
in onnxruntime, and the served model through Triton.

The answer is the Triton client's JSON: ``[{image, predictions: [{label, index, probability}]}]``
with the most likely class first. Every runtime decodes and resizes the same way (the bounded
project decoder, bilinear to the model's side), so differences come from the runtime alone; a
landmark classifier's photos are measured by the hand step's own code in onnx, as in Triton.
Torch rebuilds the network from the training checkpoint the record names; a record made before
records named one is matched to its run's ``checkpoints/best.pt`` by the ONNX file's hash.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

from asl_recognition.classes import read_class_file
from asl_recognition.imageio import ImageDecodeError
from asl_recognition.optimize.variants import OptimizeError, graph_inputs
from asl_recognition.paths import REPO_ROOT, workspace
from asl_recognition.registry.base import ModelRecord
from asl_recognition.training.architectures import IMAGES

CLIENT_PATH = REPO_ROOT / "triton" / "client" / "client.py"
BEST = Path("checkpoints") / "best.pt"


class PredictError(OptimizeError):
    """Nothing could be answered (no model, no checkpoint, no server): one line, exit 2+."""


def answers(
    paths: Sequence[Path], probabilities: np.ndarray, classes: Sequence[str], top_k: int
) -> list[dict]:
    """Each image's ``top_k`` classes, most likely first, in the Triton client's shape."""
    out = []
    for path, row in zip(paths, probabilities):
        order = np.argsort(-row, kind="stable")[:top_k]
        out.append(
            {
                "image": str(path),
                "predictions": [
                    {"label": classes[i], "index": int(i), "probability": float(row[i])}
                    for i in order
                ],
            }
        )
    return out


def decode(paths: Sequence[Path], size: int) -> tuple[list[Path], np.ndarray, list[str]]:
    """uint8 [N,3,S,S] of the readable images, and one line per file that is not one."""
    from asl_recognition.training.data import decode_resized

    kept, arrays, errors = [], [], []
    for path in paths:
        try:
            arrays.append(decode_resized(path, size).transpose(2, 0, 1))
            kept.append(path)
        except FileNotFoundError:
            errors.append(f"error: {path}: no such file")
        except (ImageDecodeError, OSError) as exc:
            errors.append(f"error: {path}: not an image ({exc})")
    batch = np.stack(arrays) if arrays else np.empty((0, 3, size, size), np.uint8)
    return kept, np.ascontiguousarray(batch), errors


def measure_hands(record: ModelRecord, paths: Sequence[Path]) -> tuple[list[Path], Any, list]:
    """(64,) landmark rows of the readable photos (features, then the found flag), measured in
    this process by the served hand step's code with the detector settings the classifier
    records; and one line per file that is not an image."""
    from asl_recognition.hands import HandLandmarker, detector_arguments
    from asl_recognition.hands.landmarker import FEATURE_COUNT, result_row
    from asl_recognition.serving.hands_repository import recorded_detector
    from asl_recognition.serving.onnx_introspect import read_signature

    onnx_path = Path(record.onnx_path)
    try:
        detector = recorded_detector(read_signature(onnx_path), onnx_path) or {}
    except ValueError as exc:
        raise PredictError(str(exc)) from None
    landmarker = HandLandmarker(**detector_arguments(detector))
    kept, rows, errors = [], [], []
    for path in paths:
        try:
            hand = landmarker.detect_path(path)
        except FileNotFoundError:
            errors.append(f"error: {path}: no such file")
            continue
        except (ImageDecodeError, OSError) as exc:
            errors.append(f"error: {path}: not an image ({exc})")
            continue
        kept.append(path)
        rows.append(result_row(hand))
    return kept, np.stack(rows) if rows else np.zeros((0, FEATURE_COUNT + 1), np.float32), errors


def predict_onnx(record: ModelRecord, paths: Sequence[Path], top_k: int) -> tuple[list, list]:
    """The registered ONNX file in onnxruntime (CPU); a landmark classifier's photos go through
    the hand pipeline first, here, as Triton's hand step would (each answer says whether a
    hand was found, like the Triton client's)."""
    from asl_recognition.optimize.measure import open_session, run_probabilities

    inputs = graph_inputs(record.onnx_path)
    landmarks = inputs.graph_type != IMAGES
    if landmarks:
        kept, samples, errors = measure_hands(record, paths)
    else:
        kept, samples, errors = decode(paths, inputs.image_size)
    if not kept:
        return [], errors
    session, _ = open_session(record.onnx_path)
    classes = read_class_file(record.classes_path)
    results = answers(kept, run_probabilities(session, samples, inputs.feeds), classes, top_k)
    if landmarks:
        for item, row in zip(results, samples):
            item["hand_found"] = bool(row[-1])
    return results, errors


def find_checkpoint(record: ModelRecord, runs: Path | None = None) -> Path:
    """The checkpoint the record names; for records made before it named one, the ``best.pt``
    of the run whose ``model.onnx`` is the registered file (same sha256)."""
    from asl_recognition.hashing import sha256_file

    variant = record.params.get("variant")
    if variant:
        raise PredictError(
            f"model {record.id} is the {variant} variant of {record.derived_from()}: "
            "torch runs the fp32 training checkpoint only (give the parent's --model-id)"
        )
    if record.checkpoint_path and Path(record.checkpoint_path).is_file():
        return Path(record.checkpoint_path)
    wanted = sha256_file(record.onnx_path)
    runs = runs or workspace() / "runs"
    chosen = record.params.get("output_dir")
    candidates = [Path(chosen) / "model.onnx"] if chosen else []
    candidates += sorted(runs.glob("*/model.onnx"))
    for onnx in candidates:
        if onnx.is_file() and (onnx.parent / BEST).is_file() and sha256_file(onnx) == wanted:
            return onnx.parent / BEST
    raise PredictError(
        f"no training run under {runs} holds model {record.id}'s ONNX with a {BEST} "
        "(pass --checkpoint)"
    )


def torch_model(checkpoint: Path) -> tuple[Any, list[str], int]:
    """The exported contract (uint8 images -> probabilities) rebuilt from a best checkpoint."""

    from asl_recognition.training.architectures import reads_images
    from asl_recognition.training.checkpoints import load_checkpoint
    from asl_recognition.training.landmark_run import LANDMARK_MODEL
    from asl_recognition.training.models import ProbabilityModel, build_model

    try:
        state = load_checkpoint(checkpoint)
    except Exception as exc:  # torch raises many types for a bad file
        raise PredictError(f"{checkpoint} is not a training checkpoint ({type(exc).__name__})")
    if not isinstance(state, dict) or "model" not in state:
        raise PredictError(f"{checkpoint} is not a training checkpoint (no 'model' state)")
    # best.pt holds the run's settings at its top, last.pt (--keep last) under "meta"
    nested = state.get("meta")
    settings = {**(nested if isinstance(nested, dict) else {}), **state}
    name, classes = settings.get("model_name"), settings.get("classes")
    size = settings.get("image_size")
    if name == LANDMARK_MODEL:
        raise PredictError(
            f"{checkpoint} is the landmark classifier's (landmark rows in, not photos): "
            "use --runtime onnx (the hand pipeline runs here) or triton"
        )
    if not reads_images(name) or not classes or not size:
        raise PredictError(f"{checkpoint}: model {name!r} is not an image classifier checkpoint")
    model = build_model(name, len(classes), int(size))
    model.load_state_dict(state["model"])
    return ProbabilityModel(model).eval(), list(classes), int(size)


def predict_torch(
    record: ModelRecord, paths: Sequence[Path], top_k: int, checkpoint: Path | None = None
) -> tuple[list, list]:
    """The training checkpoint in torch (CPU, eval mode, no gradients)."""
    import torch

    if checkpoint is None and graph_inputs(record.onnx_path).graph_type != IMAGES:
        raise PredictError(
            f"model {record.id} is a landmark classifier (landmark rows in, not photos): torch "
            "runs image classifiers; use --runtime onnx (the hand pipeline runs here) or triton"
        )
    model, classes, size = torch_model(checkpoint or find_checkpoint(record))
    kept, images, errors = decode(paths, size)
    if not kept:
        return [], errors
    with torch.inference_mode():
        probabilities = model(torch.from_numpy(images)).numpy()
    return answers(kept, probabilities, classes, top_k), errors


def triton_client() -> ModuleType:
    """triton/client/client.py, imported by path (it is a standalone script, not a package)."""
    spec = importlib.util.spec_from_file_location("asl_triton_client", CLIENT_PATH)
    if spec is None or spec.loader is None:
        raise PredictError(f"cannot load the Triton client from {CLIENT_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def predict_triton(
    paths: Sequence[Path], url: str | None, protocol: str, model: str, top_k: int
) -> tuple[list, list]:
    """The served model, through the project's Triton client functions."""
    client_module = triton_client()
    url = url or ("localhost:8001" if protocol == "grpc" else "localhost:8000")
    try:
        tc, client, spec = client_module.connect(url, protocol, model)
    except client_module.ClientError as exc:
        raise PredictError(str(exc)) from None
    args = SimpleNamespace(model=model, top_k=top_k)
    try:
        send = client_module.classify_encoded if spec.encoded else client_module.classify_decoded
        results, _failed = send(tc, client, spec, args, list(paths))
    except client_module.ClientError as exc:
        raise PredictError(str(exc)) from None
    finally:
        client.close()
    return results, []  # the client has printed a line for each file it could not answer


def run_predict(opts: Any) -> int:
    """Print the JSON answer; 0 when every image was answered, 1 when some were not."""
    import json

    from asl_recognition.optimize.variants import model_record_for
    from asl_recognition.registry import get_registry

    paths = [Path(p) for p in opts.image]
    if opts.runtime == "triton":
        results, errors = predict_triton(
            paths, opts.url, opts.protocol, opts.served_model, opts.top_k
        )
    else:
        record = model_record_for(get_registry(backend=opts.registry), opts.model_id, opts.name)
        if opts.runtime == "torch":
            checkpoint = Path(opts.checkpoint) if opts.checkpoint else None
            results, errors = predict_torch(record, paths, opts.top_k, checkpoint)
        else:
            results, errors = predict_onnx(record, paths, opts.top_k)
    for line in errors:
        print(line, file=sys.stderr)
    print(json.dumps(results, indent=2))
    return 0 if len(results) == len(paths) else 1

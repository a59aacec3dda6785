"""The optimize task's stages: check inputs, build variants, measure, profile, report, register.

Every input (model, dataset, class list, output folder) is checked before anything is written;
variants are registered only after they loaded and were scored.
"""

from __future__ import annotations

import os
import platform
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from asl_recognition.classes import read_class_file
from asl_recognition.optimize import measure, profiling, report
from asl_recognition.optimize.options import OptimizeOptions
from asl_recognition.optimize.served import serve_and_drive
from asl_recognition.optimize.variants import (
    VARIANT_FILES,
    GraphInputs,
    OptimizeError,
    claim_out_dir,
    graph_inputs,
    model_record_for,
    optimize_graph,
    quantize_int8,
    register_variant,
    sample_calibration,
)
from asl_recognition.paths import workspace
from asl_recognition.registry.base import ModelRecord, ModelRegistry
from asl_recognition.serving.triton_server import TritonServerError, local_server_missing
from asl_recognition.training.architectures import LANDMARKS
from asl_recognition.training.data import PublishedDataset, TensorSplit
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.evaluate import holdout_accuracy, holdout_labels

PROFILE_BATCH = 32


@dataclass
class Inputs:
    """The checked inputs: the fp32 record, its graph's contract, its dataset's splits (images
    decoded, or landmark rows), the held-out groups, the output folder."""

    record: ModelRecord
    graph: GraphInputs
    dataset: PublishedDataset
    splits: dict[str, TensorSplit]
    groups: list[str]
    out_dir: Path
    source_id: str  # the dataset version the samples come from (ASL, or ASL_landmarks)

    @property
    def image_size(self) -> int:
        return self.graph.image_size


def load_inputs(registry: ModelRegistry, opts: OptimizeOptions) -> Inputs:
    """Resolve the model and its dataset; read train/val/test (and holdout when present)."""
    from asl_recognition.training.data import open_published

    record = model_record_for(registry, opts.model_id or "", opts.name)
    graph = graph_inputs(record.onnx_path)
    if not record.dataset_id:
        raise OptimizeError(f"model {record.id} records no dataset to calibrate and score on")
    try:
        dataset = open_published(record.dataset_id)
    except TrainingInputError as exc:
        raise OptimizeError(str(exc)) from None
    classes = read_class_file(record.classes_path)
    if classes != dataset.classes:
        raise OptimizeError(
            f"model {record.id}'s classes differ from dataset {record.dataset_id}'s"
        )
    out_dir = _out_dir(opts.output_dir, record)
    if graph.graph_type == LANDMARKS:
        source_id, splits, groups = landmark_splits(record, classes)
    else:
        source_id, (splits, groups) = dataset.version.id, image_splits(dataset, graph.image_size)
    claim_out_dir(out_dir)
    return Inputs(record, graph, dataset, splits, groups, out_dir, source_id)


def image_splits(dataset: PublishedDataset, size: int) -> tuple[dict[str, TensorSplit], list]:
    """The published images decoded at the CNN's side, and each held-out image's group."""
    from asl_recognition.training.data import load_split

    splits = {
        s: load_split(dataset.root, s, dataset.classes, size) for s in dataset.image_splits()
    }
    groups = holdout_labels(dataset.manifest, splits["holdout"]) if "holdout" in splits else []
    return splits, groups


def landmark_splits(
    record: ModelRecord, classes: list[str]
) -> tuple[str, dict[str, TensorSplit], list[str]]:
    """The ASL_landmarks rows the model was trained on: train keeps hand rows only (what the
    model learnt from, so what INT8 calibrates on), val/test/holdout keep every photo."""
    from asl_recognition.training.landmark_data import landmark_split
    from asl_recognition.training.landmark_run import open_landmarks

    # the exact version training read (training registers it with the model)
    try:
        table, meta = open_landmarks(str(record.params["landmarks_id"]), str(record.dataset_id))
    except TrainingInputError as exc:
        raise OptimizeError(f"model {record.id}: {exc}") from None
    splits = {"train": landmark_split(table, "train", classes, hands_only=True)}
    names = ["val", "test"] + (["holdout"] if (table["split"] == "holdout").any() else [])
    splits.update({name: landmark_split(table, name, classes) for name in names})
    groups = []
    if "holdout" in splits:
        held = table[table["split"] == "holdout"]
        groups = [str(g) for g in held["holdout_label"]]
    return meta["id"], splits, groups


def _out_dir(chosen: str | None, record: ModelRecord) -> Path:
    if chosen:
        path = Path(chosen).expanduser().resolve()
        if path.is_dir() and any(path.iterdir()):
            raise OptimizeError(f"output dir {path} already holds files (nothing was overwritten)")
        return path
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return workspace() / "optimize" / f"{record.id[:12]}-{stamp}-{secrets.token_hex(2)}"


def build_variants(inputs: Inputs, opts: OptimizeOptions) -> tuple[dict[str, Path], dict]:
    """fp32 (as registered), INT8 and optimised files, and how each was made."""
    train = inputs.splits["train"]
    calibration = sample_calibration(
        train.images.numpy(), train.paths, opts.calibration_images, opts.seed
    )
    calibration.source = inputs.source_id
    paths = {"fp32": Path(inputs.record.onnx_path)}
    details: dict[str, dict[str, Any]] = {"fp32": {}}
    paths["int8"] = inputs.out_dir / VARIANT_FILES["int8"]
    details["int8"] = {
        "quantization": choose_int8(inputs, paths["fp32"], paths["int8"], calibration, opts),
        "calibration": calibration.as_dict(),
    }
    paths["optimized"] = inputs.out_dir / VARIANT_FILES["optimized"]
    details["optimized"] = optimize_graph(paths["fp32"], paths["optimized"], opts.graph_level)
    return paths, details


def choose_int8(
    inputs: Inputs, source: Path, target: Path, calibration: Any, opts: OptimizeOptions
) -> dict[str, Any]:
    """Quantise per channel, per tensor, or both and keep the better on val (never test)."""
    graph = inputs.graph
    if opts.per_channel != "auto":
        return quantize_int8(source, target, calibration, opts.per_channel == "on", graph)
    val = inputs.splits["val"]
    trials = {}
    for per_channel in (True, False):
        path = inputs.out_dir / f".int8-per-{'channel' if per_channel else 'tensor'}.onnx"
        settings = quantize_int8(source, path, calibration, per_channel, graph)
        session, _ = measure.open_session(path, opts.threads)
        probabilities = measure.run_probabilities(session, val.images.numpy(), graph.feeds)
        accuracy = measure.score(probabilities, val.labels, len(inputs.dataset.classes))
        trials[per_channel] = (path, settings, accuracy["accuracy"])
    keep = trials[True][2] >= trials[False][2]
    os.replace(trials[keep][0], target)
    trials[not keep][0].unlink()
    settings = trials[keep][1]
    settings["per_channel_choice"] = {
        "val_accuracy_per_channel": trials[True][2],
        "val_accuracy_per_tensor": trials[False][2],
        "rule": "per-channel unless per-tensor scores higher on the val split",
    }
    return settings


def evaluate_variant(session: Any, inputs: Inputs, reference: np.ndarray | None) -> dict:
    """val/test/held-out scores of one session, and its test answers' distance from fp32's."""
    classes = len(inputs.dataset.classes)
    out: dict[str, Any] = {}
    probabilities = {}
    for split in ("val", "test"):
        data = inputs.splits[split]
        probabilities[split] = measure.run_probabilities(
            session, data.images.numpy(), inputs.graph.feeds
        )
        out[split] = measure.score(probabilities[split], data.labels, classes)
    out["holdout"], out["holdout_accuracy"] = {}, None
    if "holdout" in inputs.splits:
        held = inputs.splits["holdout"]
        probs = measure.run_probabilities(session, held.images.numpy(), inputs.graph.feeds)
        out["holdout"] = measure.score_groups(
            probs, held.labels, inputs.groups, inputs.dataset.classes
        )
        out["holdout_accuracy"] = holdout_accuracy(out["holdout"])
    base = probabilities["test"] if reference is None else reference
    out["agreement"] = measure.agreement(base, probabilities["test"])
    out["_test_probabilities"] = probabilities["test"]
    return out


def profiles(inputs: Inputs, fp32: Path) -> dict[str, Any]:
    """A training step of the model's architecture and one served fp32 request, profiled."""
    import torch

    from asl_recognition.training.architectures import reads_images
    from asl_recognition.training.landmark_run import build_landmark_net
    from asl_recognition.training.models import build_model

    train = inputs.splits["train"]
    batch = train.images[:PROFILE_BATCH]
    result: dict[str, Any] = {
        "request_profile": profiling.profile_request(
            fp32, batch.numpy(), inputs.out_dir, inputs.graph.feeds
        )
    }
    arch = inputs.record.params.get("model", "cnn")
    classes = list(inputs.dataset.classes)
    torch.manual_seed(0)  # the weights do not change the step's cost
    if inputs.graph.graph_type == LANDMARKS:
        model = build_landmark_net(classes, None)
    elif reads_images(arch):
        model = build_model(arch, len(classes), inputs.image_size)
    else:
        return result
    result["train_profile"] = profiling.profile_training_step(
        model, batch, train.labels[:PROFILE_BATCH], inputs.out_dir
    )
    return result


def variant_metrics(variant: dict[str, Any], latency: dict[str, Any], size: int) -> dict:
    """What the registry keeps for a variant: the scores select_best compares, and its speed."""
    groups = variant["holdout"]
    return {
        "val_accuracy": variant["val"]["accuracy"],
        "val_macro_f1": variant["val"]["macro_f1"],
        "test_accuracy": variant["test"]["accuracy"],
        "test_macro_f1": variant["test"]["macro_f1"],
        "holdout": groups,
        "holdout_accuracy": variant["holdout_accuracy"],
        "holdout_min_group_accuracy": min((g["accuracy"] for g in groups.values()), default=None),
        "test_confusion_matrix": variant["test"]["confusion_matrix"],
        "val_confusion_matrix": variant["val"]["confusion_matrix"],
        "ms_per_image": {b: v["ms_per_image"] for b, v in latency.items()},
        "size_bytes": size,
    }


def score_variants(inputs: Inputs, paths: dict[str, Path], details: dict, opts: Any) -> tuple:
    """Every variant loaded, scored against fp32's answers and timed side by side."""
    sessions, variants, reference = {}, {}, None
    for name, path in paths.items():
        sessions[name], load_ms = measure.open_session(path, opts.threads)
        variants[name] = evaluate_variant(sessions[name], inputs, reference)
        reference = variants["fp32"]["_test_probabilities"]
        variants[name].update(
            load_ms=load_ms, size_bytes=path.stat().st_size, path=str(path), details=details[name]
        )
    test = inputs.splits["test"].images.numpy()
    latency = measure.time_interleaved(
        sessions, test, opts.batch_sizes, opts.rounds, inputs.graph.feeds
    )
    return variants, latency


def served_throughput(
    inputs: Inputs, paths: dict[str, Path], variants: dict[str, Any], opts: OptimizeOptions
) -> dict[str, Any]:
    """Images/s of each variant served by the local Triton (skipped, and said so, at 0)."""
    if opts.triton_requests == 0:
        return {"skipped": "--triton-requests 0"}
    missing = local_server_missing()
    if missing is not None:  # an agent installs requirements.txt only: the rest still counts
        print(f"optimize: Triton images/s skipped: {missing}")
        return {"skipped": f"no local tritonserver: {missing}"}
    test = inputs.splits["test"].images.numpy()
    try:
        served = serve_and_drive(
            paths,
            inputs.record.classes_path,
            test,
            inputs.graph.feeds,
            opts.triton_requests,
            opts.triton_concurrency,
            inputs.out_dir,
            name=inputs.record.name,
        )
    except TritonServerError as exc:
        raise OptimizeError(f"Triton throughput: {str(exc).splitlines()[0]}") from None
    for name, figures in served.items():
        answers = figures.pop("_answers")
        sent = np.arange(len(answers)) % len(test)  # the test sample each request carried
        for key, local in (("onnxruntime", name), ("fp32", "fp32")):
            expected = variants[local]["_test_probabilities"].argmax(1)[sent]
            figures[f"top1_agreement_{key}"] = float((answers == expected).mean())
    return {
        "variants": served,
        "model": (
            "classifier only (landmark rows in)"
            if inputs.graph.graph_type == LANDMARKS
            else "classifier (uint8 images in)"
        ),
    }


def register_variants(
    registry: ModelRegistry, inputs: Inputs, result: dict[str, Any], paths: dict, task: Any
) -> None:
    """Each variant a new version whose parent is the fp32 model."""
    for name in ("int8", "optimized"):
        variant = result["variants"][name]
        metrics = variant_metrics(variant, result["latency"][name], variant["size_bytes"])
        served = result["triton"].get("variants", {}).get(name)
        if served:
            metrics["triton_images_per_second"] = served["images_per_second"]
        record = register_variant(
            registry, inputs.record, name, paths[name], metrics, variant["details"], task=task
        )
        variant["model_id"] = record.id
        print(f"registered {name} variant as {record.name} v{record.version} ({record.id})")


def run_optimize(opts: OptimizeOptions, ctx: Any = None) -> dict[str, Any]:
    """Build, measure, profile, report and (optionally) register; returns the step outputs."""
    import onnxruntime as ort

    from asl_recognition.registry import get_registry

    if not opts.batch_sizes:
        raise OptimizeError("--batch-sizes: give at least one batch size to time")
    registry = get_registry(backend=opts.registry)
    inputs = load_inputs(registry, opts)
    shown = f"{inputs.image_size}px" if inputs.image_size else "landmark classifier"
    print(f"optimize: model {inputs.record.id} ({shown}) -> {inputs.out_dir}")
    paths, details = build_variants(inputs, opts)
    variants, latency = score_variants(inputs, paths, details, opts)
    triton = served_throughput(inputs, paths, variants, opts)
    for variant in variants.values():
        variant.pop("_test_probabilities")
    result = {
        "model": {
            "id": inputs.record.id,
            "name": inputs.record.name,
            "version": inputs.record.version,
        },
        "dataset_id": inputs.record.dataset_id,
        "contract": inputs.graph.graph_type,
        "image_size": inputs.image_size,
        "test_images": len(inputs.splits["test"]),
        "calibration": details["int8"]["calibration"],
        "batch_sizes": list(opts.batch_sizes),
        "rounds": opts.rounds,
        "onnxruntime": ort.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "gpu": False,
        "variants": variants,
        "latency": latency,
        "latency_ratio": measure.ratios(latency),
        "triton": triton,
    }
    if opts.profile:
        result.update(profiles(inputs, paths["fp32"]))
    if opts.register:
        register_variants(registry, inputs, result, paths, ctx.task if ctx is not None else None)
    variants["fp32"]["model_id"] = inputs.record.id
    publish(result, inputs.out_dir, ctx)
    return {
        "report": str(inputs.out_dir / "report.json"),
        "int8_model_id": variants["int8"].get("model_id"),
        "optimized_model_id": variants["optimized"].get("model_id"),
        "int8_latency_ratio_b1": result["latency_ratio"]["int8"].get("1"),
        "int8_test_accuracy_delta": variants["int8"]["test"]["accuracy"]
        - variants["fp32"]["test"]["accuracy"],
    }


def publish(result: dict[str, Any], out_dir: Path, ctx: Any) -> None:
    """report.json/.md/.png on disk and printed; the table, plot and files on the task."""
    files = report.write(result, out_dir)
    print(report.markdown(result))
    if ctx is None:
        return
    report.log_clearml(ctx.logger, result)
    for path in files.values():
        ctx.upload_artifact(path.name, str(path))
    for key in ("train_profile", "request_profile"):
        if key in result:
            ctx.upload_artifact(Path(result[key]["trace"]).name, result[key]["trace"])

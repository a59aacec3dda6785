"""Generate a Triton model repository from a trained model: no hand-written config.

Layout (``ensemble=True``, the default)::

    <repo>/<name>/config.pbtxt, 1/, labels.txt             ensemble that clients call
    <repo>/<name>_onnx/config.pbtxt, labels.txt, <v>/model.onnx (+ <v>/classes.txt)
    <repo>/<name>_metrics/config.pbtxt, labels.txt, 1/model.py   records model-level metrics

A landmark classifier (graph inputs FEATURES and HAND_FOUND, see ``onnx_introspect.model_kind``)
gets the same three models, the ensemble taking photo bytes, plus ``<name>_hands`` (the hand
pipeline; layout in ``hands_repository``). Both kinds can live in one repository under different
names; the kind is read from the ONNX graph, never chosen by hand.

Every config field comes from the model: tensor names, data types and dims from the ONNX graph,
labels from the class list. Configs are built as ``model_config_pb2.ModelConfig`` messages and
written with ``text_format``, so a typo is a Python error, not a server-side surprise.

Files are written so that a server polling the repository never sees half a model: a version
directory is staged under a hidden name and renamed into place, and a config is only rewritten
when its content changes (a rewrite makes Triton reload the model).

Model names are checked against what Triton accepts before any path is built, and every path
written or deleted is resolved and must lie inside the repository, so no name or symlink can
make the generator touch files elsewhere.

Versions: ``keep_versions`` directories stay on disk (a rollback is deleting the newest one).
Triton serves only the newest of them when the ensemble routes to it (the ensemble calls version
-1, "latest") or when TensorRT is on (ONNX Runtime keys its engine cache by graph, not weights,
so two versions of one graph must not share a cache); a plain model serves all kept versions.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from asl_recognition.classes import read_class_file
from asl_recognition.serving import hands_repository
from asl_recognition.serving.onnx_introspect import (
    OnnxSignature,
    OnnxSignatureError,
    file_sha256,
    model_kind,
    read_signature,
)
from asl_recognition.serving.options import BuildTritonRepoOptions

METRICS_MODEL_SOURCE = Path(__file__).with_name("metrics_step_model.py")
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.onnx"
VERSION_CLASSES_FILE = "classes.txt"
# Where the GPU image keeps TensorRT engines (a writable volume; the repository is read-only).
DEFAULT_TRT_CACHE_DIR = "/trt_cache"
# Letters, digits, '_', '-', '.'; starts with a letter or digit (so never '.', '..' or hidden);
# short enough for the '_metrics' suffix. No separator can appear, so no path can escape.
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_model_name(name: str) -> str:
    """Refuse a model name Triton would not serve or that is not one plain folder name."""
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def _inside(root: Path, path: Path) -> Path:
    """``path`` itself if it resolves (symlinks followed) strictly inside ``root``, else refuse."""
    resolved = path.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise ValueError(f"{path} resolves to {resolved}, outside the repository {root}")
    return path


def load_config(path: str | Path) -> mc.ModelConfig:
    """Parse a config.pbtxt; raises ``text_format.ParseError`` on any unknown field or value."""
    return text_format.Parse(Path(path).read_text(encoding="utf-8"), mc.ModelConfig())


def config_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def _atomic_write(root: Path, path: Path, data: bytes) -> bool:
    """Write only when the content differs; returns whether the file changed."""
    _inside(root, path)
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def _labels_bytes(classes: list[str]) -> bytes:
    return ("\n".join(classes) + "\n").encode("utf-8")


def preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two from 4 up to ``max_batch_size`` (and the maximum itself)."""
    sizes = [s for s in (4, 8, 16, 32, 64, 128, 256) if s < max_batch_size]
    return sizes + [max_batch_size] if max_batch_size > 1 else []


def _tensor(message_type: Any, name: str, data_type: str, dims: tuple[int, ...], **extra: Any):
    return message_type(name=name, data_type=mc.DataType.Value(data_type), dims=dims, **extra)


def _label_outputs(signature: OnnxSignature, classes: list[str], onnx_path: Path) -> set[str]:
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
    kind: str,
    tensorrt: bool,
    keep_versions: int,
    dynamic_batching: bool,
    max_queue_delay_us: int,
    trt_cache_path: str,
) -> mc.ModelConfig:
    """The ONNX model's config, every tensor field taken from the graph signature.

    ``keep_versions`` is how many versions Triton serves (version_policy latest N).
    """
    if kind not in ("cpu", "gpu"):
        raise ValueError(f"kind must be 'cpu' or 'gpu', not {kind!r}")
    if tensorrt and kind != "gpu":
        raise ValueError("the TensorRT execution accelerator needs GPU instances (kind='gpu')")
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
        mc.ModelInstanceGroup.KIND_GPU if kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
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

    ``hand_found``: the hand pipeline's flag (counted) and box, passed through as well.
    """
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    config.input.append(_tensor(mc.ModelInput, "probabilities", "TYPE_FP32", probs_dims))
    config.output.append(_tensor(mc.ModelOutput, "probabilities_out", "TYPE_FP32", probs_dims))
    for extra, dims in (("hand_found", (1,)), ("hand_box", (4,))) if hand_found else ():
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


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and not p.name.startswith("0")
    )


def _version_matches(version_dir: Path, sha: str, classes: list[str]) -> bool:
    onnx_file, classes_file = version_dir / MODEL_FILE, version_dir / VERSION_CLASSES_FILE
    return (
        onnx_file.is_file()
        and classes_file.is_file()
        and file_sha256(onnx_file) == sha
        and read_class_file(str(classes_file)) == classes
    )


def _compatible(version_dir: Path, signature: OnnxSignature, classes: list[str]) -> bool:
    """An older version may stay only if the new config (dims, labels) also describes it."""
    try:
        return (
            read_signature(version_dir / MODEL_FILE).key() == signature.key()
            and read_class_file(str(version_dir / VERSION_CLASSES_FILE)) == classes
        )
    except (OSError, ValueError):
        return False


def _publish_version(
    root: Path, model_dir: Path, version: int, onnx_path: Path, classes: list[str]
) -> None:
    target = _inside(root, model_dir / str(version))
    staging = Path(tempfile.mkdtemp(dir=_inside(root, model_dir), prefix=f".staging-{version}-"))
    shutil.copyfile(onnx_path, staging / MODEL_FILE)
    (staging / VERSION_CLASSES_FILE).write_bytes(_labels_bytes(classes))
    os.chmod(staging, 0o755)
    os.rename(staging, target)


def _remove_version(root: Path, model_dir: Path, version: int) -> None:
    path = _inside(root, model_dir / str(version))
    if path.is_symlink():
        raise ValueError(f"{path} is a symlink; refusing to delete through it")
    shutil.rmtree(path)


def _check_kind(model_dir: Path, expected_platform: str) -> None:
    config_file = model_dir / "config.pbtxt"
    if config_file.is_file():
        current = load_config(config_file)
        if (current.platform or current.backend) not in (expected_platform, ""):
            raise ValueError(
                f"{model_dir} already holds a '{current.platform or current.backend}' model; "
                f"use another --model-name or a fresh --repo"
            )


def _model_dirs(root: Path, model_name: str, ensemble: bool, kind: str) -> dict[str, Path]:
    """Every folder the build may touch, each checked to resolve inside the repository."""
    check_model_name(model_name)
    names = {"onnx": f"{model_name}_onnx" if ensemble else model_name}
    if ensemble:
        names.update(metrics=f"{model_name}_metrics", ensemble=model_name)
    if ensemble and kind == "landmarks":
        names["hands"] = f"{model_name}_hands"
    dirs = {key: _inside(root, root / name) for key, name in names.items()}
    for key in ("onnx", "hands"):
        for version in _versions(dirs[key]) if key in dirs else []:
            _inside(root, dirs[key] / str(version))
    return dirs


def _update_versions(
    root: Path,
    model_dir: Path,
    onnx_path: Path,
    signature: OnnxSignature,
    classes: list[str],
    keep_versions: int,
) -> tuple[int, bool, list[int]]:
    """Publish ``onnx_path`` as the newest version (or reuse it); prune what cannot stay."""
    sha = file_sha256(onnx_path)
    existing = _versions(model_dir)
    reused = bool(existing) and _version_matches(model_dir / str(existing[-1]), sha, classes)
    version = existing[-1] if reused else (existing[-1] + 1 if existing else 1)
    if not reused:
        _publish_version(root, model_dir, version, onnx_path, classes)
    pruned = []
    for old in existing:
        if old != version and not _compatible(model_dir / str(old), signature, classes):
            _remove_version(root, model_dir, old)
            pruned.append(old)
    for old in _versions(model_dir)[:-keep_versions]:
        _remove_version(root, model_dir, old)
        pruned.append(old)
    return version, reused, sorted(pruned)


def _block_bytecode_cache(root: Path, version_dir: Path) -> None:
    """Keep Python from writing ``__pycache__`` next to the step's model.py.

    The backend stub imports model.py with an isolated interpreter (PYTHONDONTWRITEBYTECODE is
    ignored, and the file cannot switch caching off before it is compiled). A new
    ``__pycache__`` folder changes the model folder, and a polling server then reloads the
    model after every start. A plain file of that name makes Python skip the cache silently.
    """
    blocker = _inside(root, version_dir / "__pycache__")
    if blocker.is_dir() and not blocker.is_symlink():
        shutil.rmtree(blocker)
    _atomic_write(root, blocker, b"")


def _write_ensemble(
    root: Path,
    dirs: dict[str, Path],
    signature: OnnxSignature,
    classes: list[str],
    max_batch_size: int,
    threshold: float,
) -> None:
    """The metrics step and the ensemble clients call (and, for landmarks, the hand model)."""
    (probs,) = signature.outputs
    model_name, metrics_dir, ensemble_dir = (
        dirs["ensemble"].name,
        dirs["metrics"],
        dirs["ensemble"],
    )
    hands = "hands" in dirs
    metrics_cfg = metrics_model_config(
        metrics_dir.name, model_name, probs.dims, max_batch_size, threshold, hand_found=hands
    )
    _atomic_write(root, metrics_dir / LABELS_FILE, _labels_bytes(classes))
    _atomic_write(root, metrics_dir / "1" / "model.py", METRICS_MODEL_SOURCE.read_bytes())
    _block_bytecode_cache(root, metrics_dir / "1")
    _atomic_write(root, metrics_dir / "config.pbtxt", config_text(metrics_cfg).encode())
    _inside(root, ensemble_dir / "1").mkdir(parents=True, exist_ok=True)
    _atomic_write(root, ensemble_dir / LABELS_FILE, _labels_bytes(classes))
    if hands:
        ens_cfg = hands_repository.hands_ensemble_config(
            model_name,
            dirs["hands"].name,
            dirs["onnx"].name,
            metrics_dir.name,
            probs,
            max_batch_size,
            LABELS_FILE,
        )
    else:
        ens_cfg = ensemble_config(
            model_name, dirs["onnx"].name, metrics_dir.name, signature, max_batch_size
        )
    _atomic_write(root, ensemble_dir / "config.pbtxt", config_text(ens_cfg).encode())


def _read_model(
    onnx_path: Path, classes_path: str | Path, ensemble: bool
) -> tuple[OnnxSignature, list[str], set[str], str]:
    """Signature, class names, labelled outputs and model kind; refuse what cannot be served."""
    signature = read_signature(onnx_path)
    classes = read_class_file(str(classes_path))
    labelled = _label_outputs(signature, classes, onnx_path)
    kind = model_kind(signature)
    if kind == "landmarks":
        hands_repository.check_landmark_classifier(signature, classes, onnx_path)
    elif ensemble and (len(signature.inputs) != 1 or len(signature.outputs) != 1):
        raise OnnxSignatureError(
            f"{onnx_path}: the ensemble needs one input and one output "
            f"(got {len(signature.inputs)} and {len(signature.outputs)}); use ensemble=False"
        )
    return signature, classes, labelled, kind


def _hands_config(
    dirs: dict[str, Path],
    max_batch_size: int,
    hand_instances: int,
    dynamic_batching: bool,
    max_queue_delay_us: int,
) -> mc.ModelConfig | None:
    """The hand pipeline's config when the build has one (a landmark classifier's ensemble)."""
    if "hands" not in dirs:
        return None
    return hands_repository.hands_model_config(
        dirs["hands"].name,
        max_batch_size,
        hand_instances,
        dynamic_batching,
        preferred_batch_sizes(max_batch_size),
        max_queue_delay_us,
    )


def _write_hands(root: Path, hands_dir: Path, config: mc.ModelConfig) -> int:
    """The hand pipeline model: its verified version folder, then its config."""
    version, removed = hands_repository.publish_hands_version(
        _inside(root, hands_dir), _versions(hands_dir)
    )
    for old in removed:
        _remove_version(root, hands_dir, old)
    _atomic_write(root, hands_dir / "config.pbtxt", config_text(config).encode())
    return version


def _graph_summary(signature: Any, classes: list[str], graph_kind: str) -> dict[str, Any]:
    return {
        "classes": len(classes),
        "input_dims": {t.name: list(t.dims) for t in signature.inputs},
        "graph_kind": graph_kind,
    }


def _trt_cache_path(base: str, model_dir: Path, onnx_path: Path, tensorrt: bool) -> str:
    """TensorRT engines are keyed by graph, not weights: one cache folder per model file.

    One level below ``base`` (the mounted volume): ONNX Runtime's TensorRT provider creates
    only the last folder of the path and fails with "Failed to create directory" on a fresh
    volume when two are missing.
    """
    if not tensorrt:
        return base
    return f"{base.rstrip('/')}/{model_dir.name}-{file_sha256(onnx_path)[:16]}"


def _check_kinds(dirs: dict[str, Path]) -> None:
    """An existing folder of another kind (platform) under a name we would write is refused."""
    for key, platform in (
        ("onnx", "onnxruntime_onnx"),
        ("ensemble", "ensemble"),
        ("hands", "python"),
    ):
        if key in dirs:
            _check_kind(dirs[key], platform)


def _onnx_config(
    opts: BuildTritonRepoOptions,
    name: str,
    signature: OnnxSignature,
    labelled: set[str],
    trt_cache_path: str,
) -> mc.ModelConfig:
    """The ONNX model's config from the task's options."""
    return onnx_model_config(
        name,
        signature,
        labelled,
        max_batch_size=opts.max_batch_size,
        instances=opts.instances,
        kind=opts.kind,
        tensorrt=opts.tensorrt,
        # Serve only the newest version when the ensemble routes to "latest" anyway, or when
        # TensorRT engines are cached per graph (see the module docstring).
        keep_versions=1 if (opts.ensemble or opts.tensorrt) else opts.keep_versions,
        dynamic_batching=opts.dynamic_batching,
        max_queue_delay_us=opts.max_queue_delay_us,
        trt_cache_path=trt_cache_path,
    )


def build_repository(
    onnx_path: str | Path,
    classes_path: str | Path,
    repo_dir: str | Path,
    settings: BuildTritonRepoOptions | None = None,
    trt_cache_dir: str = DEFAULT_TRT_CACHE_DIR,
    **changes: Any,
) -> dict[str, Any]:
    """Add ``onnx_path`` as the newest version of ``settings.model_name`` in ``repo_dir``.

    ``settings`` are the build_triton_repo task's options (their defaults when None); ``changes``
    replace single fields by name (``ensemble=False``), so every default is declared once.
    A landmark classifier (inputs FEATURES, HAND_FOUND) also gets ``<name>_hands`` with
    ``hand_instances`` CPU instances, and an ensemble that takes photo bytes.

    The same model twice is a no-op (same version). A model whose signature or classes differ
    from the versions already there replaces them: the regenerated config would not describe
    them, and Triton would refuse to load them. Bad names and options raise ``ValueError``
    before anything is written.
    """
    opts = dataclasses.replace(settings or BuildTritonRepoOptions(), **changes)
    onnx_path = Path(onnx_path)
    root = Path(repo_dir).resolve()
    check_model_name(opts.model_name)
    check_batching(opts.max_batch_size)
    if opts.keep_versions < 1:
        raise ValueError(f"keep_versions must be >= 1 (got {opts.keep_versions})")
    signature, classes, labelled, graph_kind = _read_model(onnx_path, classes_path, opts.ensemble)
    dirs = _model_dirs(root, opts.model_name, opts.ensemble, graph_kind)
    hands_cfg = _hands_config(
        dirs,
        opts.max_batch_size,
        opts.hand_instances,
        opts.dynamic_batching,
        opts.max_queue_delay_us,
    )
    model_dir = dirs["onnx"]
    trt_cache = _trt_cache_path(trt_cache_dir, model_dir, onnx_path, opts.tensorrt)
    config = _onnx_config(opts, model_dir.name, signature, labelled, trt_cache)
    _check_kinds(dirs)
    model_dir.mkdir(parents=True, exist_ok=True)
    version, reused, pruned = _update_versions(
        root, model_dir, onnx_path, signature, classes, opts.keep_versions
    )
    _atomic_write(root, model_dir / LABELS_FILE, _labels_bytes(classes))
    _atomic_write(root, model_dir / "config.pbtxt", config_text(config).encode())
    result = {
        "repo": str(root),
        "model_name": opts.model_name,
        "version": version,
        "onnx_model": model_dir.name,
        "versions": _versions(model_dir),
        "pruned": pruned,
        "reused": reused,
        "ensemble": opts.ensemble,
        **_graph_summary(signature, classes, graph_kind),
    }
    if hands_cfg is not None:
        result["hands_model"] = dirs["hands"].name
        result["hands_version"] = _write_hands(root, dirs["hands"], hands_cfg)
    if opts.ensemble:
        threshold = opts.low_confidence_threshold
        _write_ensemble(root, dirs, signature, classes, opts.max_batch_size, threshold)
        result["metrics_model"] = dirs["metrics"].name
    return result

"""Generate a Triton model repository from a trained model: no hand-written config.

Layout (``ensemble=True``, the default)::

    <repo>/<name>/config.pbtxt, 1/, labels.txt             ensemble that clients call
    <repo>/<name>_onnx/config.pbtxt, labels.txt, <v>/model.onnx (+ <v>/classes.txt)
    <repo>/<name>_metrics/config.pbtxt, labels.txt, 1/model.py   records model-level metrics

A landmark classifier (graph inputs FEATURES and HAND_FOUND, see ``onnx_introspect.graph_type``)
gets the same three models, the ensemble taking photo bytes, plus ``<name>_hands`` (the hand
pipeline; layout in ``hands_repository``). Both graph types can live in one repository under
different names; the graph type is read from the ONNX graph, never chosen by hand.

The configs come from :mod:`.configs` (every field from the graph and the class list); the files
are written by :mod:`.repo_files` (atomically, versioned, never outside the repository).

Versions: ``keep_versions`` directories stay on disk (a rollback is deleting the newest one).
Triton serves only the newest of them when the ensemble routes to it (the ensemble calls version
-1, "latest") or when TensorRT is on (ONNX Runtime keys its engine cache by graph, not weights,
so two versions of one graph must not share a cache); a plain model serves all kept versions.

Write order (poll mode may load between any two writes): the versions that the new config and
labels would not describe go first, then every label and config, the new version last, so no
poll between two writes sees a version beside another model's labels. Within one poll Triton still
loads the changed classifier before the ensemble (version -1) that labels it: after a change of
classes, answers in that moment (~0.2 s) can carry the old labels (docs/security.md, "hot swap").
Builds into one repository take turns (``.build.lock``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable

from tritonclient.grpc import model_config_pb2 as mc

from asl_recognition.classes import read_class_file
from asl_recognition.hashing import sha256_file
from asl_recognition.locks import exclusive
from asl_recognition.serving import hands_repository, repo_manifest
from asl_recognition.serving.configs import (
    DEFAULT_TRT_CACHE_DIR,
    LABELS_FILE,
    check_batching,
    config_text,
    ensemble_config,
    label_outputs,
    metrics_model_config,
    onnx_model_config,
    preferred_batch_sizes,
)
from asl_recognition.serving.onnx_introspect import (
    OnnxSignature,
    OnnxSignatureError,
    graph_type,
    read_signature,
)
from asl_recognition.serving.options import BuildTritonRepoOptions
from asl_recognition.serving.repo_files import (
    BUILD_LOCK_WAIT_S,
    atomic_write,
    block_bytecode_cache,
    check_model_name,
    check_platform,
    inside,
    labels_bytes,
    model_dirs,
    remove_changed_versions,
    remove_incompatible,
    remove_staging_leftovers,
    remove_unused_hands,
    remove_version,
    update_versions,
    version_numbers,
)
from asl_recognition.training.architectures import LANDMARKS

METRICS_MODEL_SOURCE = Path(__file__).with_name("metrics_step_model.py")


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
    atomic_write(root, metrics_dir / LABELS_FILE, labels_bytes(classes))
    atomic_write(root, metrics_dir / "1" / "model.py", METRICS_MODEL_SOURCE.read_bytes())
    block_bytecode_cache(root, metrics_dir / "1")
    atomic_write(root, metrics_dir / "config.pbtxt", config_text(metrics_cfg).encode())
    inside(root, ensemble_dir / "1").mkdir(parents=True, exist_ok=True)
    atomic_write(root, ensemble_dir / LABELS_FILE, labels_bytes(classes))
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
    atomic_write(root, ensemble_dir / "config.pbtxt", config_text(ens_cfg).encode())


def _read_model(
    onnx_path: Path, classes_path: str | Path, ensemble: bool
) -> tuple[OnnxSignature, list[str], set[str], str]:
    """Signature, class names, labelled outputs and graph type; refuse what cannot be served."""
    signature = read_signature(onnx_path)
    classes = read_class_file(str(classes_path))
    labelled = label_outputs(signature, classes, onnx_path)
    graph = graph_type(signature)
    if graph == LANDMARKS:
        hands_repository.check_landmark_classifier(signature, classes, onnx_path)
    elif ensemble and (len(signature.inputs) != 1 or len(signature.outputs) != 1):
        raise OnnxSignatureError(
            f"{onnx_path}: the ensemble needs one input and one output "
            f"(got {len(signature.inputs)} and {len(signature.outputs)}); use ensemble=False"
        )
    return signature, classes, labelled, graph


def check_servable(onnx_path: str | Path, classes_path: str | Path) -> None:
    """Raise ``ValueError`` (one line) for a model the pipeline's build would refuse (class list
    and output width, graph type, inputs): select_best asks before it promotes one."""
    _read_model(Path(onnx_path), classes_path, BuildTritonRepoOptions().ensemble)


def _hands_config(
    dirs: dict[str, Path],
    max_batch_size: int,
    hand_instances: int,
    dynamic_batching: bool,
    max_queue_delay_us: int,
    detector: dict[str, Any] | None,
    queue_timeout_s: float,
) -> mc.ModelConfig | None:
    """The hand pipeline's config when the build has one (a landmark classifier's ensemble),
    measuring photos as the classifier's training table was measured (``detector``)."""
    if "hands" not in dirs:
        return None
    return hands_repository.hands_model_config(
        dirs["hands"].name,
        max_batch_size,
        hand_instances,
        dynamic_batching,
        preferred_batch_sizes(max_batch_size),
        max_queue_delay_us,
        detector,
        queue_timeout_s,
    )


def _write_hands(root: Path, hands_dir: Path, config: mc.ModelConfig, after: int) -> int:
    """The hand pipeline model: its verified version folder, then its config."""
    version, removed = hands_repository.publish_hands_version(
        inside(root, hands_dir), version_numbers(hands_dir), after=after
    )
    for old in removed:
        remove_version(root, hands_dir, old)
    atomic_write(root, hands_dir / "config.pbtxt", config_text(config).encode())
    return version


def _graph_summary(signature: Any, classes: list[str], graph: str) -> dict[str, Any]:
    return {
        "classes": len(classes),
        "input_dims": {t.name: list(t.dims) for t in signature.inputs},
        "graph_type": graph,
    }


def _trt_cache_path(base: str, model_dir: Path, onnx_path: Path, tensorrt: bool) -> str:
    """TensorRT engines are keyed by graph, not weights: one cache folder per model file.

    One level below ``base`` (the mounted volume): ONNX Runtime's TensorRT provider creates
    only the last folder of the path and fails with "Failed to create directory" on a fresh
    volume when two are missing.
    """
    if not tensorrt:
        return base
    return f"{base.rstrip('/')}/{model_dir.name}-{sha256_file(onnx_path)[:16]}"


def _check_platforms(dirs: dict[str, Path], recorded: dict[str, dict[str, str]]) -> None:
    """An existing folder of another platform under a name we would write is refused, unless a
    build wrote its config and it was changed since: that one is rewritten (a corrupted config
    had made the rebuild that the server's refusal asks for crash on it, for good)."""
    for key, platform in (
        ("onnx", "onnxruntime_onnx"),
        ("ensemble", "ensemble"),
        ("hands", "python"),
    ):
        if key in dirs and not _config_changed_since_build(dirs[key], recorded):
            check_platform(dirs[key], platform)


def _config_changed_since_build(model_dir: Path, recorded: dict[str, dict[str, str]]) -> bool:
    written = recorded.get(model_dir.name, {}).get("config.pbtxt")
    config = model_dir / "config.pbtxt"
    if written is None or not config.is_file() or config.is_symlink():
        return False
    return sha256_file(config) != written


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
        instance_kind=opts.instance_kind,
        tensorrt=opts.tensorrt,
        # Serve only the newest version when the ensemble routes to "latest" anyway, or when
        # TensorRT engines are cached per graph (see the module docstring).
        keep_versions=1 if (opts.ensemble or opts.tensorrt) else opts.keep_versions,
        dynamic_batching=opts.dynamic_batching,
        max_queue_delay_us=opts.max_queue_delay_us,
        trt_cache_path=trt_cache_path,
    )


class ModelSuperseded(ValueError):
    """The model this build was given is no longer the one to serve (another was promoted)."""


def build_repository(
    onnx_path: str | Path,
    classes_path: str | Path,
    repo_dir: str | Path,
    settings: BuildTritonRepoOptions | None = None,
    trt_cache_dir: str = DEFAULT_TRT_CACHE_DIR,
    superseded: Callable[[], str | None] | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """Add ``onnx_path`` as the newest version of ``settings.model_name`` in ``repo_dir``.

    ``settings`` are the build_triton_repo task's options (their defaults when None); ``changes``
    replace single fields by name (``ensemble=False``), so every default is declared once.
    A landmark classifier (inputs FEATURES, HAND_FOUND) also gets ``<name>_hands`` with
    ``hand_instances`` CPU instances, and an ensemble that takes photo bytes.

    Builds into one repository take turns (``.build.lock`` at its root): two at once had
    crashed, left staging folders, and served one model's version under the other's labels.
    The build records what it wrote (:mod:`.repo_manifest`); versions changed since the last
    record are removed first, so no server loads them. The same model twice is a no-op (same
    version). A model whose signature or classes differ from the versions already there
    replaces them: the regenerated config would not describe them, and Triton would refuse to
    load them. Bad names and options raise ``ValueError`` before anything is written, as does
    ``superseded()`` returning why this model should no longer be served, asked once the build's
    turn has come (:class:`ModelSuperseded`).
    """
    opts = dataclasses.replace(settings or BuildTritonRepoOptions(), **changes)
    onnx_path = Path(onnx_path)
    root = Path(repo_dir).resolve()
    check_model_name(opts.model_name)
    check_batching(opts.max_batch_size)
    if opts.keep_versions < 1:
        raise ValueError(f"keep_versions must be >= 1 (got {opts.keep_versions})")
    signature, classes, labelled, graph = _read_model(onnx_path, classes_path, opts.ensemble)
    dirs = model_dirs(root, opts.model_name, opts.ensemble, graph)
    hands_cfg = _hands_config(
        dirs,
        opts.max_batch_size,
        opts.hand_instances,
        opts.dynamic_batching,
        opts.max_queue_delay_us,
        hands_repository.recorded_detector(signature, onnx_path) if graph == LANDMARKS else None,
        opts.hand_queue_timeout_s,
    )
    trt_cache = _trt_cache_path(trt_cache_dir, dirs["onnx"], onnx_path, opts.tensorrt)
    config = _onnx_config(opts, dirs["onnx"].name, signature, labelled, trt_cache)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / repo_manifest.BUILD_LOCK, timeout=BUILD_LOCK_WAIT_S):
        recorded = repo_manifest.read_manifest(root) or {}  # unreadable: refused, no write
        why = superseded() if superseded is not None else None
        if why:
            raise ModelSuperseded(why)
        remove_staging_leftovers(root)
        _check_platforms(dirs, recorded)
        try:
            written = _write_models(
                opts, root, dirs, onnx_path, signature, classes, config, hands_cfg
            )
        except BaseException as exc:  # Ctrl-C, a full disk, a refusal half-way
            _record_failed_build(root, [d.name for d in dirs.values()], exc)
            raise
        repo_manifest.record(root, [d.name for d in dirs.values()])
    return {**written, **_graph_summary(signature, classes, graph)}


def _record_failed_build(root: Path, folders: list[str], exc: BaseException) -> None:
    """A build that failed after changing the repository leaves it refused ("build again"):
    recorded as written, or it would pass as whole while Triton polls half a model. One that
    changed none of its folders keeps the record, so what was served stays served."""
    with contextlib.suppress(OSError, ValueError):
        first = repo_manifest.read_manifest(root) is None
        if first or any(p.split("/")[0] in folders for p in repo_manifest.problems(root)):
            why = f"{type(exc).__name__}: {exc}".rstrip(": ")[:200]
            repo_manifest.record(root, folders, unfinished=why)


def _write_models(
    opts: BuildTritonRepoOptions,
    root: Path,
    dirs: dict[str, Path],
    onnx_path: Path,
    signature: OnnxSignature,
    classes: list[str],
    config: mc.ModelConfig,
    hands_cfg: mc.ModelConfig | None,
) -> dict[str, Any]:
    """The writes of :func:`build_repository`, made holding the repository's build lock."""
    model_dir = dirs["onnx"]
    model_dir.mkdir(parents=True, exist_ok=True)
    # Order matters in poll mode (Triton may load between any two writes): old versions the new
    # labels would misname go first, then every label and config, the new version last.
    newest = {key: max(version_numbers(d), default=0) for key, d in dirs.items()}
    record = repo_manifest.read_manifest(root) or {}
    changed = [
        f"{d.name}/{v}"
        for d in dirs.values()
        for v in remove_changed_versions(root, d, record.get(d.name, {}))
    ]
    incompatible = remove_incompatible(root, model_dir, signature, classes)
    atomic_write(root, model_dir / LABELS_FILE, labels_bytes(classes))
    atomic_write(root, model_dir / "config.pbtxt", config_text(config).encode())
    if opts.ensemble:
        threshold = opts.low_confidence_threshold
        _write_ensemble(root, dirs, signature, classes, opts.max_batch_size, threshold)
    hands_version = (
        None
        if hands_cfg is None
        else _write_hands(root, dirs["hands"], hands_cfg, newest["hands"])
    )
    # after the ensemble that no longer names it
    unused = None if "hands" in dirs else remove_unused_hands(root, opts.model_name, record)
    version, reused, pruned = update_versions(
        root, model_dir, onnx_path, classes, opts.keep_versions, newest["onnx"]
    )
    result = {
        "repo": str(root),
        "model_name": opts.model_name,
        "version": version,
        "onnx_model": model_dir.name,
        "versions": version_numbers(model_dir),
        "pruned": sorted(incompatible + pruned),
        "removed_changed": changed,
        "removed_unused": [unused] if unused else [],
        "reused": reused,
        "ensemble": opts.ensemble,
    }
    if hands_version is not None:
        result["hands_model"], result["hands_version"] = dirs["hands"].name, hands_version
    if opts.ensemble:
        result["metrics_model"] = dirs["metrics"].name
    return result

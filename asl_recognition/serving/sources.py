"""Where the model to serve comes from: a ClearML training task, the model registry, or files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from asl_recognition.paths import workspace
from asl_recognition.serving.repository import build_repository

ONNX_ARTIFACT = "model.onnx"
CLASSES_ARTIFACT = "classes.txt"


class ModelSourceError(ValueError):
    """The options name no model, or name one that cannot be found."""


def _clearml_task_getter(task_id: str) -> Any:
    from clearml import Task

    return Task.get_task(task_id=task_id)


def from_training_task(
    task_id: str, get_task: Callable[[str], Any] = _clearml_task_getter
) -> tuple[Path, Path]:
    """Download the ``model.onnx`` and ``classes.txt`` artifacts of a training task."""
    task = get_task(task_id)
    artifacts = task.artifacts
    missing = [n for n in (ONNX_ARTIFACT, CLASSES_ARTIFACT) if n not in artifacts]
    if missing:
        raise ModelSourceError(
            f"training task {task_id} has no artifact(s) {missing} (has {sorted(artifacts)})"
        )
    paths = []
    for name in (ONNX_ARTIFACT, CLASSES_ARTIFACT):
        local = artifacts[name].get_local_copy()
        if not local or not Path(local).is_file():
            raise ModelSourceError(f"training task {task_id}: artifact {name} did not download")
        paths.append(Path(local))
    return paths[0], paths[1]


def from_registry(model_id: str, registry: Any = None) -> tuple[Path, Path]:
    """A registry id, or ``production`` for the model currently promoted."""
    if registry is None:
        from asl_recognition.registry import get_registry

        registry = get_registry()
    record = registry.production() if model_id == "production" else registry.get(model_id)
    if record is None:
        raise ModelSourceError("no model is promoted to production in the registry yet")
    return Path(record.onnx_path), Path(record.classes_path)


def model_files(
    train_task: str | None = None,
    model_id: str | None = None,
    onnx: str | None = None,
    classes: str | None = None,
    get_task: Callable[[str], Any] = _clearml_task_getter,
    registry: Any = None,
) -> tuple[Path, Path]:
    """Exactly one source: a training task id, a registry id, or an ONNX file + class list."""
    chosen = [bool(train_task), bool(model_id), bool(onnx or classes)]
    if sum(chosen) != 1:
        raise ModelSourceError("give exactly one of --train-task, --model-id, --onnx/--classes")
    if train_task:
        return from_training_task(train_task, get_task)
    if model_id:
        return from_registry(model_id, registry)
    if not (onnx and classes):
        raise ModelSourceError("--onnx and --classes go together")
    for path in (onnx, classes):
        if not Path(path).is_file():
            raise ModelSourceError(f"{path} does not exist")
    return Path(onnx), Path(classes)


def build_from_options(options: Any) -> dict[str, Any]:
    """The ``build_triton_repo`` task body: resolve the model, then write the repository.

    ``options`` is a :class:`asl_recognition.serving.options.BuildTritonRepoOptions`.
    """
    onnx_path, classes_path = model_files(
        train_task=options.train_task,
        model_id=options.model_id,
        onnx=options.onnx,
        classes=options.classes,
    )
    repo = options.repo or str(workspace() / "triton_repo")
    return build_repository(onnx_path, classes_path, repo, options)

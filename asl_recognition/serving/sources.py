"""Where the model to serve comes from: a ClearML training task, the model registry, or files."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from asl_recognition.hashing import copy_hashed
from asl_recognition.paths import workspace
from asl_recognition.registry.base import ModelIntegrityError
from asl_recognition.serving import repo_manifest
from asl_recognition.serving.repository import ModelSuperseded, build_repository

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


def registry_record(model_id: str, registry: Any = None) -> tuple[Any, Any]:
    """(record, registry) of a registry id, or of ``production`` for the model promoted now;
    its files checked against their sha256 by the registry."""
    if registry is None:
        from asl_recognition.registry import get_registry

        registry = get_registry()
    record = registry.production() if model_id == "production" else registry.get(model_id)
    if record is None:
        raise ModelSourceError("no model is promoted to production in the registry yet")
    return record, registry


def from_registry(model_id: str, registry: Any = None) -> tuple[Path, Path]:
    """A registry id, or ``production`` for the model currently promoted."""
    record, _ = registry_record(model_id, registry)
    return Path(record.onnx_path), Path(record.classes_path)


def private_copies(record: Any, folder: Path) -> tuple[Path, Path]:
    """The record's weights and class list copied into ``folder``, each hashed in the same read
    and compared with the sha256 recorded at registration: a file altered in the registry while
    the build waits for its turn is refused, never built (the build reads only these copies)."""
    copies = []
    for role, source in (("onnx", record.onnx_path), ("classes", record.classes_path)):
        dest = folder / Path(source).name
        sha, _ = copy_hashed(source, dest)
        wanted = (getattr(record, "sha256", None) or {}).get(role)
        if wanted and sha != wanted:
            raise ModelIntegrityError(
                f"model {record.id}: {source} changed after it was checked (sha256 differs "
                "from the one recorded at registration); refused"
            )
        copies.append(dest)
    return copies[0], copies[1]


def no_longer_production(record: Any, registry: Any) -> str | None:
    """Why a build of the production model chosen earlier must not be served now: another
    model was promoted meanwhile (its own build serves it), or None."""
    current = registry.production(record.name)
    if current is not None and current.id == record.id:
        return None
    now = current.id if current is not None else "none"
    return (
        f"model {record.id} is no longer in production (now: {now}, promoted since this model "
        "was chosen: its own build serves it); nothing written"
    )


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

    ``options`` is a :class:`asl_recognition.serving.options.BuildTritonRepoOptions`. A registry
    model is built from private copies checked against its recorded sha256, and one that was
    production when chosen (or any, with ``require_production``: the pipeline's build of what
    its select_best chose) must still be when the build's turn comes (two pipelines at once).
    """
    repo = options.repo or str(workspace() / "triton_repo")
    if options.require_production and not options.model_id:
        raise ModelSourceError("--require-production checks a registry model: give --model-id")
    if not options.model_id or options.train_task or options.onnx or options.classes:
        onnx_path, classes_path = model_files(
            train_task=options.train_task,
            model_id=options.model_id,
            onnx=options.onnx,
            classes=options.classes,
        )
        return build_repository(onnx_path, classes_path, repo, options)
    record, registry = registry_record(options.model_id)
    current = registry.production(record.name)
    was_production = current is not None and current.id == record.id
    if options.require_production and not was_production:
        raise ModelSuperseded(no_longer_production(record, registry) or "")
    with tempfile.TemporaryDirectory(prefix="asl_build_") as private:
        onnx_path, classes_path = private_copies(record, Path(private))
        return build_repository(
            onnx_path,
            classes_path,
            repo,
            options,
            superseded=(
                (lambda: no_longer_production(record, registry)) if was_production else None
            ),
        )


def stage_built_models(result: dict[str, Any], dest: Path) -> Path:
    """Copy the model folders a build wrote (``result``: :func:`build_repository`'s) to
    ``dest``, with an integrity record of just those, for upload: the whole ``--repo`` had been
    zipped, so a folder given there that held other files (``.``, the agent's checkout; a home
    folder with ``.ssh``) went to the files server; the record keeps a downloaded copy checked."""
    repo = Path(result["repo"])
    names = {result["model_name"], result["onnx_model"]}
    names |= {result.get("hands_model"), result.get("metrics_model")}
    built = sorted(n for n in names if n and (repo / n).is_dir())
    for name in built:
        shutil.copytree(repo / name, dest / name, symlinks=True)
    repo_manifest.record(dest, built, fresh=True)
    return dest

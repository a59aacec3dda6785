"""Model registry: ``get_registry()`` picks ClearML models with a server, local JSON without."""

from __future__ import annotations

from asl_recognition.clearml_env import server_configured
from asl_recognition.paths import workspace
from asl_recognition.registry.base import (
    PRODUCTION_TAG,
    ModelIdError,
    ModelIntegrityError,
    ModelNotFoundError,
    ModelRecord,
    ModelRegistry,
    NewModel,
)


def get_registry(backend: str = "auto") -> ModelRegistry:
    """``auto`` follows the same server detection as task tracking and the dataset store."""
    if backend == "auto":
        backend = "clearml" if server_configured() else "local"
    if backend == "clearml":
        from asl_recognition.registry.clearml_registry import ClearMLModelRegistry

        return ClearMLModelRegistry()
    if backend == "local":
        from asl_recognition.registry.local import LocalModelRegistry

        return LocalModelRegistry(workspace() / "registry")
    raise ValueError(f"unknown model registry backend {backend!r} (auto, clearml, local)")


__all__ = [
    "PRODUCTION_TAG",
    "ModelIdError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "ModelRecord",
    "ModelRegistry",
    "NewModel",
    "get_registry",
]

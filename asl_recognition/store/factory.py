"""Pick the dataset store: ClearML Datasets with a server, the local CAS without."""

from __future__ import annotations

from asl_recognition.clearml_env import server_configured
from asl_recognition.paths import workspace
from asl_recognition.store.base import DatasetStore


def get_store(backend: str = "auto") -> DatasetStore:
    """``auto`` follows the same server detection as the task tracking; the ClearML store uploads
    to ``ASL_OUTPUT_URI`` when set (on an agent: its task's destination), else to the files
    server."""
    if backend == "auto":
        backend = "clearml" if server_configured() else "local"
    if backend == "clearml":
        from asl_recognition.clearml_env import step_output_uri
        from asl_recognition.store.clearml_store import ClearMLDatasetStore

        return ClearMLDatasetStore(output_uri=step_output_uri())
    if backend == "local":
        from asl_recognition.store.local import LocalDatasetStore

        return LocalDatasetStore(workspace() / "datasets")
    raise ValueError(f"unknown dataset store backend {backend!r} (auto, clearml, local)")

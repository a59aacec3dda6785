"""Dataset versions by name, version or id, with parents and manifests; two backends."""

from asl_recognition.store.base import (
    DatasetNotFoundError,
    DatasetStore,
    DatasetVersion,
    FileEntry,
)
from asl_recognition.store.factory import get_store

__all__ = ["DatasetNotFoundError", "DatasetStore", "DatasetVersion", "FileEntry", "get_store"]

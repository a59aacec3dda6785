"""Model-registry contract: training registers, selection promotes, serving reads production."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

PRODUCTION_TAG = "production"


class ModelNotFoundError(LookupError):
    """No registered model matches the id or name asked for."""


@dataclass
class ModelRecord:
    """One registered model version: the files serving needs, the metrics selection needs.

    ``onnx_path``/``classes_path``/``baseline_path`` are files readable on THIS machine (the
    ClearML backend downloads them through the SDK); what another machine uses is the ``id``
    and, for the ClearML backend, ``onnx_uri``, the uploaded weights' URL.
    """

    id: str
    name: str
    version: int
    task_id: str | None
    onnx_path: str
    classes_path: str
    baseline_path: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    dataset_id: str | None = None
    tags: list[str] = field(default_factory=list)
    created: str = ""
    published: bool = False
    backend: str = "local"
    onnx_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelRecord":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class ModelRegistry(ABC):
    """Register, list and promote models; ClearML models with a server, JSON records without."""

    backend = "abstract"

    @abstractmethod
    def register(
        self,
        name: str,
        onnx_path: str,
        classes_path: str,
        metrics: Mapping[str, Any],
        params: Mapping[str, Any],
        task: Any = None,
        dataset_id: str | None = None,
        baseline_path: str | None = None,
    ) -> ModelRecord:
        """Store a new model version (files copied or uploaded) and return its record."""

    @abstractmethod
    def get(self, model_id: str) -> ModelRecord:
        """The record of ``model_id``; raises :class:`ModelNotFoundError`."""

    @abstractmethod
    def list(self, name: str = "asl") -> list[ModelRecord]:
        """All versions of ``name``, oldest first."""

    @abstractmethod
    def promote(self, model_id: str) -> ModelRecord:
        """Tag ``model_id`` production (only one at a time) and publish it."""

    def production(self, name: str = "asl") -> ModelRecord | None:
        """The model serving should run, or None before the first promotion."""
        tagged = [r for r in self.list(name) if PRODUCTION_TAG in r.tags]
        return tagged[-1] if tagged else None

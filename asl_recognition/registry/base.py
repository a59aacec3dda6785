"""Model-registry contract: training registers, selection promotes, serving reads production."""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

PRODUCTION_TAG = "production"
# Both backends issue 32 lowercase hex digits: the local registry uuid4().hex, ClearML its ids.
MODEL_ID = re.compile(r"[0-9a-f]{32}")
MODEL_KEYWORDS = ("production",)


class ModelNotFoundError(LookupError):
    """No registered model matches the id or name asked for."""


class ModelIdError(ModelNotFoundError, ValueError):
    """Not a model id at all (``../../x``): refused before it reaches a path or a server."""


class ModelIntegrityError(ModelNotFoundError, ValueError):
    """A registered file is missing or no longer matches the sha256 recorded at registration."""


def check_model_id(model_id: Any, keywords: tuple[str, ...] = ()) -> str:
    """``model_id`` when it has the registry's id format (or is one of ``keywords``)."""
    if isinstance(model_id, str) and (model_id in keywords or MODEL_ID.fullmatch(model_id)):
        return model_id
    allowed = " or ".join([*(repr(k) for k in keywords), "32 lowercase hex digits"])
    raise ModelIdError(f"model id {str(model_id)[:80]!r} is not a model id ({allowed})")


@dataclass(frozen=True)
class NewModel:
    """What a caller registers: the files serving needs, the scores selection needs, and where
    the model came from (``parent_id``: the registered model it was derived from, e.g. the fp32
    model of an INT8 variant; ``checkpoint_path``: the training checkpoint it was exported from).
    """

    name: str
    onnx_path: str
    classes_path: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    dataset_id: str | None = None
    baseline_path: str | None = None
    parent_id: str | None = None
    checkpoint_path: str | None = None
    tags: tuple[str, ...] = ()


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
    parent_id: str | None = None
    checkpoint_path: str | None = None
    # role (onnx, classes, baseline, checkpoint) -> sha256 at registration (local backend)
    sha256: dict[str, str] = field(default_factory=dict)

    def files(self) -> dict[str, str]:
        """role -> path of every file the record names."""
        paths = {
            "onnx": self.onnx_path,
            "classes": self.classes_path,
            "baseline": self.baseline_path,
            "checkpoint": self.checkpoint_path,
        }
        return {role: path for role, path in paths.items() if path}

    def derived_from(self) -> str | None:
        """The registered model this one was made from: the native ``parent_id``, or for
        records made before it existed, the ``parent`` their params named."""
        return self.parent_id or (self.params or {}).get("parent")

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
    def register(self, model: NewModel, task: Any = None) -> ModelRecord:
        """Store a new version of ``model.name`` (files copied or uploaded), its parent linked
        natively; raises :class:`ModelNotFoundError` for an unknown ``parent_id``."""

    @abstractmethod
    def get(self, model_id: str) -> ModelRecord:
        """The record of ``model_id``; raises :class:`ModelNotFoundError`."""

    @abstractmethod
    def list(self, name: str = "asl") -> list[ModelRecord]:
        """All versions of ``name``, oldest first."""

    @abstractmethod
    def promote(self, model_id: str) -> ModelRecord:
        """Tag ``model_id`` production (only one at a time) and publish it."""

    def variants(self, parent: ModelRecord, kind: str) -> list[ModelRecord]:
        """The ``kind`` variants (``params.variant``, e.g. ``int8``) derived from ``parent``,
        oldest first. A backend whose ``list`` is costly (downloads) filters before reading."""
        return [
            r
            for r in self.list(parent.name)
            if (r.params or {}).get("variant") == kind and r.derived_from() == parent.id
        ]

    @contextlib.contextmanager
    def selecting(self) -> Iterator[None]:
        """Held from reading production to promoting (select_best): two selections at once
        would each compare with the old production and the last to promote would win. Here a
        no-op: the ClearML server offers no lock (its promotions are ordered by a stamp, so
        two at once never leave none)."""
        yield

    def production(self, name: str = "asl") -> ModelRecord | None:
        """The model serving should run, or None before the first promotion."""
        tagged = [r for r in self.list(name) if PRODUCTION_TAG in r.tags]
        return tagged[-1] if tagged else None

    def production_scores(self, name: str = "asl") -> ModelRecord | None:
        """The production model's record for comparing scores, its files not read: a model
        whose weights were lost or altered had blocked every later promotion, though the
        comparison reads only its metrics and a new model is the remedy."""
        return self.production(name)

"""Offline model registry: JSON records plus copied files under ``<workspace>/registry``.

Files are copied (not referenced) so a record stays valid after its training run dir is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asl_recognition.registry.base import (
    PRODUCTION_TAG,
    ModelNotFoundError,
    ModelRecord,
    ModelRegistry,
    NewModel,
)


class LocalModelRegistry(ModelRegistry):
    backend = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.records = self.root / "records"
        self.files = self.root / "files"
        self.records.mkdir(parents=True, exist_ok=True)
        self.files.mkdir(parents=True, exist_ok=True)

    def _write(self, record: ModelRecord) -> None:
        tmp = self.records / f".{record.id}.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(record.to_dict(), indent=1, default=str))
        os.replace(tmp, self.records / f"{record.id}.json")

    def register(self, model: NewModel, task: Any = None) -> ModelRecord:
        if model.parent_id is not None:
            self.get(model.parent_id)  # an unknown parent is refused before anything is copied
        model_id = uuid.uuid4().hex
        target = self.files / model_id
        target.mkdir(parents=True)
        copies = {
            "onnx": shutil.copy2(model.onnx_path, target / "model.onnx"),
            "classes": shutil.copy2(model.classes_path, target / "classes.txt"),
        }
        for key, source, name in (
            ("baseline", model.baseline_path, "baseline.json"),
            ("checkpoint", model.checkpoint_path, "checkpoint.pt"),
        ):
            copies[key] = shutil.copy2(source, target / name) if source else None
        versions = [r.version for r in self.list(model.name)]
        record = ModelRecord(
            id=model_id,
            name=model.name,
            version=max(versions, default=0) + 1,
            task_id=getattr(task, "id", None) if task is not None else None,
            onnx_path=str(copies["onnx"]),
            classes_path=str(copies["classes"]),
            baseline_path=str(copies["baseline"]) if copies["baseline"] else None,
            metrics=dict(model.metrics),
            params=json.loads(json.dumps(dict(model.params), default=str)),
            dataset_id=model.dataset_id,
            tags=list(model.tags),
            created=datetime.now(timezone.utc).isoformat(),
            published=False,
            backend=self.backend,
            parent_id=model.parent_id,
            checkpoint_path=str(copies["checkpoint"]) if copies["checkpoint"] else None,
        )
        self._write(record)
        return record

    def get(self, model_id: str) -> ModelRecord:
        path = self.records / f"{model_id}.json"
        if not path.is_file():
            raise ModelNotFoundError(f"no model with id {model_id} in {self.root}")
        return ModelRecord.from_dict(json.loads(path.read_text()))

    def list(self, name: str = "asl") -> list[ModelRecord]:
        records = [
            ModelRecord.from_dict(json.loads(p.read_text())) for p in self.records.glob("*.json")
        ]
        return sorted((r for r in records if r.name == name), key=lambda r: (r.version, r.created))

    def promote(self, model_id: str) -> ModelRecord:
        chosen = self.get(model_id)
        for other in self.list(chosen.name):
            if other.id != chosen.id and PRODUCTION_TAG in other.tags:
                other.tags = [t for t in other.tags if t != PRODUCTION_TAG]
                self._write(other)
        if PRODUCTION_TAG not in chosen.tags:
            chosen.tags.append(PRODUCTION_TAG)
        chosen.published = True
        self._write(chosen)
        return chosen

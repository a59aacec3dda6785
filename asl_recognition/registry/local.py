"""Offline model registry: JSON records plus copied files under ``<workspace>/registry``.

Files are copied (not referenced) so a record stays valid after its training run dir is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asl_recognition.registry.base import (
    PRODUCTION_TAG,
    ModelNotFoundError,
    ModelRecord,
    ModelRegistry,
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
        model_id = uuid.uuid4().hex
        target = self.files / model_id
        target.mkdir(parents=True)
        onnx_copy = shutil.copy2(onnx_path, target / "model.onnx")
        classes_copy = shutil.copy2(classes_path, target / "classes.txt")
        baseline_copy = (
            shutil.copy2(baseline_path, target / "baseline.json") if baseline_path else None
        )
        versions = [r.version for r in self.list(name)]
        record = ModelRecord(
            id=model_id,
            name=name,
            version=max(versions, default=0) + 1,
            task_id=getattr(task, "id", None) if task is not None else None,
            onnx_path=str(onnx_copy),
            classes_path=str(classes_copy),
            baseline_path=str(baseline_copy) if baseline_copy else None,
            metrics=dict(metrics),
            params=json.loads(json.dumps(dict(params), default=str)),
            dataset_id=dataset_id,
            tags=[],
            created=datetime.now(timezone.utc).isoformat(),
            published=False,
            backend=self.backend,
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

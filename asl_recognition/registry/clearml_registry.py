"""Model registry on a ClearML server: OutputModel + label enumeration, tags, publish.

Metrics, params, the dataset id and the drift baseline travel as model metadata so that the
selection step and serving can read them without the training task. ``OutputModel`` cannot work
in offline mode (clearml#1243), which is why the local backend exists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asl_recognition.classes import read_class_file, write_class_file
from asl_recognition.paths import workspace
from asl_recognition.registry.base import (
    PRODUCTION_TAG,
    ModelNotFoundError,
    ModelRecord,
    ModelRegistry,
)


class ClearMLModelRegistry(ModelRegistry):
    backend = "clearml"

    def __init__(self, project: str = "ASL") -> None:
        self.project = project
        self.cache = workspace() / "registry_cache"

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
        from clearml import OutputModel, Task

        task = task if task is not None else Task.current_task()
        if task is None:
            raise RuntimeError("ClearML OutputModel needs a running task (call init_task first)")
        classes = read_class_file(str(classes_path))
        labels = {c: i for i, c in enumerate(classes)}
        # From metadata only: listing records would download every earlier model's weights.
        version = max((self._version(m) for m in self._query(name)), default=0) + 1
        model = OutputModel(
            task=task,
            name=name,
            label_enumeration=labels,
            framework="ONNX",
            tags=[f"v{version}"],
            comment=f"ASL classifier v{version}",
        )
        model.update_weights(
            weights_filename=str(onnx_path), auto_delete_file=False, async_enable=False
        )
        baseline = json.loads(Path(baseline_path).read_text()) if baseline_path else None
        model.set_all_metadata(
            {
                "version": {"value": str(version), "type": "int"},
                "metrics": {"value": json.dumps(dict(metrics)), "type": "str"},
                "params": {"value": json.dumps(dict(params), default=str), "type": "str"},
                "dataset_id": {"value": str(dataset_id or ""), "type": "str"},
                "baseline": {"value": json.dumps(baseline), "type": "str"},
            },
            replace=True,
        )
        return ModelRecord(
            id=model.id,
            name=name,
            version=version,
            task_id=getattr(task, "id", None),
            onnx_path=str(onnx_path),
            classes_path=str(classes_path),
            baseline_path=str(baseline_path) if baseline_path else None,
            metrics=dict(metrics),
            params=json.loads(json.dumps(dict(params), default=str)),
            dataset_id=dataset_id,
            tags=[f"v{version}"],
            published=False,
            backend=self.backend,
        )

    @staticmethod
    def _version(model: Any) -> int:
        meta = model.get_all_metadata() or {}
        return int((meta.get("version") or {}).get("value") or 0)

    def _record(self, model: Any) -> ModelRecord:
        """Materialise the model's weights, labels and baseline as local files serving can read."""
        meta = {k: v.get("value") for k, v in (model.get_all_metadata() or {}).items()}
        folder = self.cache / model.id
        folder.mkdir(parents=True, exist_ok=True)
        labels = model.labels or {}
        classes_path = folder / "classes.txt"
        write_class_file(
            str(classes_path), [c for c, _ in sorted(labels.items(), key=lambda x: x[1])]
        )
        baseline_path = None
        if meta.get("baseline") not in (None, "", "null"):
            baseline_path = folder / "baseline.json"
            baseline_path.write_text(meta["baseline"])
        onnx_path = model.get_local_copy(raise_on_error=True)
        return ModelRecord(
            id=model.id,
            name=model.name,
            version=int(meta.get("version") or 0),
            task_id=model.task,
            onnx_path=str(onnx_path),
            classes_path=str(classes_path),
            baseline_path=str(baseline_path) if baseline_path else None,
            metrics=json.loads(meta.get("metrics") or "{}"),
            params=json.loads(meta.get("params") or "{}"),
            dataset_id=meta.get("dataset_id") or None,
            tags=list(model.tags or []),
            published=bool(model.published),
            backend=self.backend,
        )

    def get(self, model_id: str) -> ModelRecord:
        from clearml import Model

        try:
            model = Model(model_id=model_id)
            _ = model.name
        except Exception as exc:  # the SDK raises several types for an unknown id
            raise ModelNotFoundError(f"no ClearML model with id {model_id}: {exc}") from exc
        return self._record(model)

    def _query(self, name: str, tags: list[str] | None = None) -> list[Any]:
        from clearml import Model

        found = Model.query_models(model_name=name, tags=tags, only_published=False)
        return [m for m in found if m.name == name]

    def list(self, name: str = "asl") -> list[ModelRecord]:
        records = [self._record(m) for m in self._query(name)]
        return sorted(records, key=lambda r: r.version)

    def production(self, name: str = "asl") -> ModelRecord | None:
        found = self._query(name, tags=[PRODUCTION_TAG])
        return self._record(found[0]) if found else None

    def promote(self, model_id: str) -> ModelRecord:
        from clearml import Model

        chosen = Model(model_id=model_id)
        for other in self._query(chosen.name, tags=[PRODUCTION_TAG]):
            if other.id != chosen.id:
                other.tags = [t for t in other.tags if t != PRODUCTION_TAG]
        if PRODUCTION_TAG not in chosen.tags:
            chosen.tags = list(chosen.tags) + [PRODUCTION_TAG]
        if not chosen.published:
            chosen.publish()
        return self._record(chosen)

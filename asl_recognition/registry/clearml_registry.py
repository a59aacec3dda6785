"""Model registry on a ClearML server: OutputModel + label enumeration, tags, publish.

What travels, so that select_best, build_triton_repo and serving work on another machine:
- the ONNX weights are UPLOADED (``OutputModel.update_weights(upload_uri=...)``) to
  ``ASL_OUTPUT_URI`` when set, else to the training task's ``output_uri``, else to the ClearML
  files server; without a destination the SDK would only register the local path, which is
  what ``ASL_OUTPUT_URI=none`` asks for (one machine only: ``register_uri`` of the file);
- the class list is the model's label enumeration (name -> output index), the SDK's field for
  exactly this, stored on the model entity itself and shown in the UI; ``classes.txt`` is
  rewritten from it on the reading machine, so the weights stay one plain ``.onnx`` file;
- metrics, params, the dataset id, the drift baseline and the weights' sha256 are model metadata.
Readers download the weights with ``Model.get_local_copy()`` and check the sha256.
Every query names the registry's project: ``Model.query_models`` without ``project_name``
searches every project of the server (``clearml/model.py``, ``Model.query_models``), so version
numbers, ``production`` and demotion would act on any model called ``asl``.
``OutputModel`` cannot work in offline mode (clearml#1243), which is why the local backend exists.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from asl_recognition.classes import read_class_file, write_class_file
from asl_recognition.clearml_env import OUTPUT_URI_ENV, configured_output_uri, weights_stay_local
from asl_recognition.hashing import sha256_file
from asl_recognition.paths import workspace
from asl_recognition.registry.base import (
    PRODUCTION_TAG,
    ModelIntegrityError,
    ModelNotFoundError,
    ModelRecord,
    ModelRegistry,
    NewModel,
    check_model_id,
)


def upload_destination(task: Any) -> str | None:
    """Where the weights go: ``ASL_OUTPUT_URI``, else the task's output_uri, else the files
    server (what ``Task.init(output_uri=True)`` resolves to); None for ``ASL_OUTPUT_URI=none``
    (the weights stay where they are)."""
    if weights_stay_local():
        return None
    chosen = configured_output_uri() or getattr(task, "output_uri", None)
    if chosen:
        return str(chosen)
    from clearml.backend_api import Session

    return Session.get_files_server_host()


def _is_local_copy_of(uri: str, path: str | Path) -> bool:
    """True when ``uri`` names ``path`` itself: the SDK registered it instead of uploading."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return False
    return Path(parsed.path or uri).resolve() == Path(path).resolve()


def weights_name(onnx_path: Path) -> str:
    """The uploaded file's name, new for each registration. The SDK uploads to
    ``<project>/<task>.<task id>/models/<name>`` (``_upload_model``,
    clearml/backend_interface/model.py), and a task run again under its id (web UI Reset, then
    Enqueue; a reset keeps published models) wrote over the weights of the model it had
    registered before, the production one included: every later download failed its sha256."""
    return f"{onnx_path.stem}.{uuid.uuid4().hex[:12]}.onnx"


def _store_weights(output: Any, onnx_path: Path, destination: str | None) -> str:
    """Upload to ``destination``; without one register the file where it is (``register_uri``:
    no upload, whatever default destination the task or the SDK configuration has)."""
    if destination is None:
        # the SDK returns None for a registered uri (backend ``Model.update`` returns nothing)
        return output.update_weights(register_uri=onnx_path.resolve().as_uri()) or output.url
    return output.update_weights(
        weights_filename=str(onnx_path),
        upload_uri=destination,
        target_filename=weights_name(onnx_path),
        auto_delete_file=False,
        async_enable=False,
    )


def set_model_tags(model: Any, tags: list[str]) -> None:
    """Replace the model's tags. ``Model.tags = []`` is a silent no-op in clearml 2.1 (the
    backend ``update`` falls back to the stored tags on a falsy list); ``edit`` sends the list
    as given, an empty one included, and nothing else."""
    model._get_base_model().edit(tags=list(tags))


def set_model_parent(model: Any, parent_id: str) -> None:
    """The model entity's own ``parent`` field (the UI's lineage), through a ``models.edit``
    request carrying only that field. ``OutputModel`` sets a parent only from its task's input
    model, and the backend ``update(parent_id=...)`` would resend every other field."""
    from clearml.backend_api.services import models

    base = model._get_base_model()
    base.send(models.EditRequest(model=model.id, parent=parent_id))
    base.reload()


def _metadata(model: NewModel, version: int) -> dict[str, dict[str, str]]:
    """Everything ``_record`` reads back besides the weights, labels, tags and parent."""
    baseline = json.loads(Path(model.baseline_path).read_text()) if model.baseline_path else None
    values = {
        "version": (str(version), "int"),
        "metrics": (json.dumps(dict(model.metrics)), "str"),
        "params": (json.dumps(dict(model.params), default=str), "str"),
        "dataset_id": (str(model.dataset_id or ""), "str"),
        "baseline": (json.dumps(baseline), "str"),
        "onnx_sha256": (sha256_file(model.onnx_path), "str"),
        # a path on the training machine: predict falls back to a search where it is absent
        "checkpoint_path": (str(model.checkpoint_path or ""), "str"),
    }
    return {key: {"value": value, "type": kind} for key, (value, kind) in values.items()}


def _classes_from_labels(model_id: str, labels: Mapping[str, int]) -> list[str]:
    """Class names in output-index order; refuses an enumeration that is not 0..n-1."""
    ordered = sorted(labels.items(), key=lambda item: item[1])
    if not ordered or [i for _, i in ordered] != list(range(len(ordered))):
        raise ModelNotFoundError(
            f"model {model_id}: label enumeration is not indices 0..n-1: {dict(labels)}"
        )
    return [name for name, _ in ordered]


class ClearMLModelRegistry(ModelRegistry):
    backend = "clearml"

    def __init__(self, project: str = "ASL") -> None:
        self.project = project
        self.cache = workspace() / "registry_cache"

    def register(self, model: NewModel, task: Any = None) -> ModelRecord:
        from clearml import OutputModel, Task

        task = task if task is not None else Task.current_task()
        if task is None:
            raise RuntimeError("ClearML OutputModel needs a running task (call init_task first)")
        classes = read_class_file(str(model.classes_path))
        destination = upload_destination(task)
        if model.parent_id is not None:
            self._model(model.parent_id)  # an unknown parent is refused before any upload
        # From metadata only: listing records would download every earlier model's weights.
        version = max((self._version(m) for m in self._query(model.name)), default=0) + 1
        tags = [f"v{version}", *model.tags]
        output = OutputModel(
            task=task,
            name=model.name,
            label_enumeration={c: i for i, c in enumerate(classes)},
            framework="ONNX",
            tags=tags,
            comment=f"ASL classifier v{version}",
        )
        uri = _store_weights(output, Path(model.onnx_path), destination)
        if not uri or (destination and _is_local_copy_of(uri, model.onnx_path)):
            raise RuntimeError(
                f"ClearML registered {model.onnx_path} without uploading it to {destination} "
                f"(set {OUTPUT_URI_ENV} or the files server)"
            )
        if model.parent_id is not None:
            set_model_parent(output, model.parent_id)
        if not output.set_all_metadata(_metadata(model, version), replace=True):
            # the SDK returns False for a refused write: a model without version, metrics and
            # sha256 would be registered in silence, its weights never checked on download
            output.archive()
            raise RuntimeError(
                f"ClearML refused the metadata of model {output.id} (version, metrics, sha256); "
                "its archiving was asked for, and it is not registered: train again once the "
                "server accepts writes"
            )
        return ModelRecord(
            id=output.id,
            name=model.name,
            version=version,
            task_id=getattr(task, "id", None),
            onnx_path=str(model.onnx_path),
            classes_path=str(model.classes_path),
            baseline_path=str(model.baseline_path) if model.baseline_path else None,
            metrics=dict(model.metrics),
            params=json.loads(json.dumps(dict(model.params), default=str)),
            dataset_id=model.dataset_id,
            tags=tags,
            published=False,
            backend=self.backend,
            onnx_uri=uri,
            parent_id=model.parent_id,
            checkpoint_path=model.checkpoint_path,
        )

    @staticmethod
    def _version(model: Any) -> int:
        meta = model.get_all_metadata() or {}
        return int((meta.get("version") or {}).get("value") or 0)

    @staticmethod
    def _download(model: Any, sha256: str | None) -> Path:
        """The weights through the SDK (downloaded and cached), never the registered path."""
        url = model.url
        try:
            local = model.get_local_copy(raise_on_error=True)
        except ValueError as exc:
            raise ModelNotFoundError(f"model {model.id}: weights at {url} did not download: {exc}")
        if not local or not Path(local).is_file():
            raise ModelNotFoundError(
                f"model {model.id}: weights at {url} are not readable on this machine "
                f"(a path on the training machine? register with {OUTPUT_URI_ENV} or the files "
                "server)"
            )
        if not sha256:  # as the local registry: weights that cannot be checked are not used
            raise ModelIntegrityError(
                f"model {model.id}: no sha256 of its weights was recorded (a registration whose "
                "metadata write failed, or made elsewhere), so they cannot be checked: register "
                "the model again"
            )
        if sha256_file(local) != sha256:
            raise ModelIntegrityError(
                f"model {model.id}: downloaded weights {local} fail sha256 (altered since "
                "registration)"
            )
        return Path(local)

    def _scores(self, model: Any) -> ModelRecord:
        """The model's record from its metadata and labels only: its weights are not
        downloaded nor checked (the class list is written from the labels)."""
        meta = {k: v.get("value") for k, v in (model.get_all_metadata() or {}).items()}
        folder = self.cache / model.id
        folder.mkdir(parents=True, exist_ok=True)
        classes_path = folder / "classes.txt"
        write_class_file(str(classes_path), _classes_from_labels(model.id, model.labels or {}))
        return ModelRecord(
            id=model.id,
            name=model.name,
            version=int(meta.get("version") or 0),
            task_id=model.task,
            onnx_path="",
            classes_path=str(classes_path),
            baseline_path=None,
            metrics=json.loads(meta.get("metrics") or "{}"),
            params=json.loads(meta.get("params") or "{}"),
            dataset_id=meta.get("dataset_id") or None,
            tags=list(model.tags or []),
            published=bool(model.published),
            backend=self.backend,
            onnx_uri=model.url,
        )

    def production_scores(self, name: str = "asl") -> ModelRecord | None:
        found = self._query(name, tags=[PRODUCTION_TAG])
        return self._scores(max(found, key=_promoted_at)) if found else None

    def _record(self, model: Any) -> ModelRecord:
        """Materialise the model's weights, labels and baseline as local files serving can read."""
        meta = {k: v.get("value") for k, v in (model.get_all_metadata() or {}).items()}
        scores = self._scores(model)  # the class list too, refused when not 0..n-1
        onnx_path = self._download(model, meta.get("onnx_sha256"))
        folder = self.cache / model.id
        baseline_path = None
        if meta.get("baseline") not in (None, "", "null"):
            baseline_path = folder / "baseline.json"
            baseline_path.write_text(meta["baseline"])
        return dataclasses.replace(
            scores,
            onnx_path=str(onnx_path),
            baseline_path=str(baseline_path) if baseline_path else None,
            parent_id=getattr(model._get_model_data(), "parent", None) or None,
            checkpoint_path=meta.get("checkpoint_path") or None,
        )

    @staticmethod
    def _model(model_id: str) -> Any:
        from clearml import Model

        check_model_id(model_id)
        try:
            model = Model(model_id=model_id)
            _ = model.name
        except Exception as exc:  # the SDK raises several types for an unknown id
            raise ModelNotFoundError(f"no ClearML model with id {model_id}: {exc}") from exc
        return model

    def get(self, model_id: str) -> ModelRecord:
        return self._record(self._model(model_id))

    def _query(self, name: str, tags: list[str] | None = None) -> list[Any]:
        """Models called ``name`` in this registry's project only (never the whole server)."""
        from clearml import Model

        found = Model.query_models(
            project_name=self.project, model_name=name, tags=tags, only_published=False
        )
        return [m for m in found if m.name == name]

    def variants(self, parent: ModelRecord, kind: str) -> list[ModelRecord]:
        """Read from metadata: only the variants' own weights are downloaded, not every
        model's (``_record`` downloads)."""
        found = []
        for model in self._query(parent.name):
            meta = model.get_all_metadata() or {}
            params = json.loads((meta.get("params") or {}).get("value") or "{}")
            native = getattr(model._get_model_data(), "parent", None)
            if params.get("variant") == kind and (native or params.get("parent")) == parent.id:
                found.append(model)
        return sorted((self._record(m) for m in found), key=lambda r: r.version)

    def list(self, name: str = "asl") -> list[ModelRecord]:
        records = [self._record(m) for m in self._query(name)]
        return sorted(records, key=lambda r: r.version)

    def production(self, name: str = "asl") -> ModelRecord | None:
        """The production-tagged model promoted last (two are tagged for a moment while a
        promotion demotes the other)."""
        found = self._query(name, tags=[PRODUCTION_TAG])
        return self._record(max(found, key=_promoted_at)) if found else None

    def promote(self, model_id: str) -> ModelRecord:
        """Stamp, publish and tag the chosen model, then demote the tagged ones promoted
        before it: a failure in between leaves two tagged for a moment, never none. Two
        promotions at once had each demoted the other's model, leaving none (the server has no
        lock); now the later stamp survives both."""
        chosen = self._model(model_id)
        tagged = self._query(chosen.name, tags=[PRODUCTION_TAG])
        # later than every stamp there: an agent whose clock runs behind still promotes last
        stamp = max([time.time()] + [_promoted_at(m)[0] + 1e-3 for m in tagged])
        if not chosen.set_metadata(PROMOTED_AT, repr(stamp), "float"):
            raise RuntimeError(f"ClearML refused to stamp model {model_id}; not promoted")
        if not chosen.published:
            chosen.publish()
        if PRODUCTION_TAG not in chosen.tags:
            set_model_tags(chosen, list(chosen.tags) + [PRODUCTION_TAG])
        for other in self._query(chosen.name, tags=[PRODUCTION_TAG]):
            if other.id != chosen.id and _promoted_at(other) < (stamp, chosen.id):
                set_model_tags(other, [t for t in other.tags if t != PRODUCTION_TAG])
        return self._record(chosen)


PROMOTED_AT = "promoted_at"  # metadata: when a promotion stamped the model (seconds)


def _promoted_at(model: Any) -> tuple[float, str]:
    """(stamp, id): the order of promotions; a model promoted before stamps existed is 0."""
    meta = model.get_all_metadata() or {}
    try:
        stamp = float((meta.get(PROMOTED_AT) or {}).get("value") or 0.0)
    except (TypeError, ValueError):
        stamp = 0.0
    return stamp, model.id

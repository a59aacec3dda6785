"""Offline model registry: JSON records plus copied files under ``<workspace>/registry``.

Files are copied (not referenced) so a record stays valid after its training run dir is deleted.
A record names its files relative to the registry (``files/<id>/model.onnx``), so moving or
copying the workspace moves them too, and holds each file's sha256: reading a record
(``get``, ``production``) checks them and refuses a file altered since registration. Versions
are numbered and production is moved under one OS file lock (``<root>/.lock``), so writers in
several processes never share a version number nor leave two production models.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asl_recognition.hashing import sha256_file
from asl_recognition.locks import exclusive
from asl_recognition.registry.base import (
    MODEL_ID,
    PRODUCTION_TAG,
    ModelIntegrityError,
    ModelNotFoundError,
    ModelRecord,
    ModelRegistry,
    NewModel,
    check_model_id,
)
from asl_recognition.store.base import remove_stale, writer_tag

PATH_FIELDS = ("onnx_path", "classes_path", "baseline_path", "checkpoint_path")
FILE_NAMES = {
    "onnx": "model.onnx",
    "classes": "classes.txt",
    "baseline": "baseline.json",
    "checkpoint": "checkpoint.pt",
}
LOCK_NAME = ".lock"
SELECT_LOCK_NAME = ".select.lock"


def _check_types(record: ModelRecord) -> None:
    """TypeError for a field of the wrong type: ``"tags": null`` had ended a production build
    in a traceback, and ``"version": null`` every listing."""
    wanted = {
        "id": str, "name": str, "version": int, "onnx_path": str, "classes_path": str,
        "metrics": dict, "params": dict, "tags": list, "created": str, "sha256": dict,
    }  # fmt: skip
    for name, kind in wanted.items():
        value = getattr(record, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"its {name} is {type(value).__name__}, not {kind.__name__}")
    if not all(isinstance(tag, str) for tag in record.tags):
        raise TypeError("its tags are not all text")
    for name in ("baseline_path", "checkpoint_path", "task_id", "dataset_id", "parent_id"):
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"its {name} is {type(value).__name__}, not text")


class LocalModelRegistry(ModelRegistry):
    backend = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.records = self.root / "records"
        self.files = self.root / "files"
        self.lock = self.root / LOCK_NAME
        self.records.mkdir(parents=True, exist_ok=True)
        self.files.mkdir(parents=True, exist_ok=True)
        self.remove_stale()

    def remove_stale(self) -> list[Path]:
        """Copies and records a registration killed mid-way left (its pid is dead): before,
        a ``kill -9`` left model files that no record named; a live writer's stay."""
        return remove_stale([*self.files.glob(".*.tmp*"), *self.records.glob(".*.tmp*")], ".tmp")

    # -- records on disk: paths relative to the registry, made absolute when read ------------
    def _write(self, record: ModelRecord) -> None:
        data = record.to_dict()
        for key in PATH_FIELDS:
            if data[key]:
                data[key] = Path(data[key]).relative_to(self.root).as_posix()
        tmp = self.records / f".{record.id}.json.tmp{writer_tag()}"
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, self.records / f"{record.id}.json")

    def _read(self, path: Path) -> ModelRecord:
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise TypeError(f"it holds a JSON {type(data).__name__}, not an object")
            record = ModelRecord.from_dict(data)
            _check_types(record)
            if record.id != path.stem or not MODEL_ID.fullmatch(record.id):
                raise ValueError(f"its id {record.id[:80]!r} is not its file name's 32 hex digits")
        except (ValueError, TypeError) as exc:
            raise ModelIntegrityError(
                f"model record {path} is not a readable record: {exc}"
            ) from None
        for key in PATH_FIELDS:
            value = getattr(record, key)
            if value:  # its own copy, wherever the workspace is now (old records: absolute)
                setattr(record, key, str(self.files / record.id / Path(value).name))
        return record

    def verify(self, record: ModelRecord) -> ModelRecord:
        """``record`` when every file it names still has the sha256 recorded at registration."""
        if not record.sha256:
            raise ModelIntegrityError(
                f"model {record.id}: its record holds no sha256 of its files (registered before "
                "they were recorded), so they cannot be checked: register the model again"
            )
        for role, path in record.files().items():
            try:
                actual = sha256_file(path)
            except OSError as exc:
                raise ModelIntegrityError(
                    f"model {record.id}: its {role} file {path} cannot be read "
                    f"({exc.strerror or exc})"
                ) from None
            if actual != record.sha256.get(role):
                raise ModelIntegrityError(
                    f"model {record.id}: {path} does not match the sha256 recorded at "
                    "registration (altered or corrupted since); refused"
                )
        return record

    # -- the registry contract ---------------------------------------------------------------
    def _copy(self, model: NewModel, staged: Path) -> dict[str, Path | None]:
        """The files copied into ``staged``, a temp folder carrying this writer's pid."""
        staged.mkdir(parents=True)
        sources = {
            "onnx": model.onnx_path,
            "classes": model.classes_path,
            "baseline": model.baseline_path,
            "checkpoint": model.checkpoint_path,
        }
        return {
            role: Path(shutil.copy2(source, staged / FILE_NAMES[role])) if source else None
            for role, source in sources.items()
        }

    def register(self, model: NewModel, task: Any = None) -> ModelRecord:
        if model.parent_id is not None:
            self.get(model.parent_id)  # an unknown parent is refused before anything is copied
        model_id = uuid.uuid4().hex
        try:
            return self._register(model, model_id, task)
        except BaseException:  # an unreadable record, a full disk: no copies left without one
            shutil.rmtree(self._staged(model_id), ignore_errors=True)
            if not (self.records / f"{model_id}.json").exists():
                shutil.rmtree(self.files / model_id, ignore_errors=True)
            raise

    def _staged(self, model_id: str) -> Path:
        return self.files / f".{model_id}.tmp{writer_tag()}"

    def _register(self, model: NewModel, model_id: str, task: Any) -> ModelRecord:
        staged = self._copy(model, self._staged(model_id))
        # hashed from the copies: what the registry holds is what later reads are checked on
        hashes = {role: sha256_file(path) for role, path in staged.items() if path}
        folder = self.files / model_id
        copies = {role: folder / path.name if path else None for role, path in staged.items()}
        with exclusive(self.lock):
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
                sha256=hashes,
            )
            self._remove_orphans()
            os.rename(self._staged(model_id), folder)
            self._write(record)
        return record

    def _remove_orphans(self) -> None:
        """Model folders that no record names: a registration killed between its rename and
        its record (or by a version that copied in place). Only under the lock, which every
        registration holds from its rename to its record, so none is half-way."""
        for folder in self.files.iterdir():
            if (
                MODEL_ID.fullmatch(folder.name)
                and not (self.records / f"{folder.name}.json").exists()
            ):
                shutil.rmtree(folder, ignore_errors=True)

    def _record(self, model_id: str) -> ModelRecord:
        """The record as stored (files not checked); the id must have the registry's format."""
        path = self.records / f"{check_model_id(model_id)}.json"
        if not path.is_file():
            raise ModelNotFoundError(f"no model with id {model_id} in {self.root}")
        return self._read(path)

    def get(self, model_id: str) -> ModelRecord:
        return self.verify(self._record(model_id))

    def list(self, name: str = "asl") -> list[ModelRecord]:
        """Records only: their files are checked when one is read with ``get``/``production``."""
        records = [self._read(p) for p in self.records.glob("*.json")]
        return sorted((r for r in records if r.name == name), key=lambda r: (r.version, r.created))

    def production(self, name: str = "asl") -> ModelRecord | None:
        record = super().production(name)
        return self.verify(record) if record is not None else None

    def production_scores(self, name: str = "asl") -> ModelRecord | None:
        return super().production(name)  # the records, unverified: only metrics are read

    @contextlib.contextmanager
    def selecting(self) -> Iterator[None]:
        """Selections take turns (``<root>/.select.lock``, apart from the records' lock)."""
        with exclusive(self.root / SELECT_LOCK_NAME):
            yield

    def promote(self, model_id: str) -> ModelRecord:
        """Tag the chosen record first, then demote the others (each a file of its own, renamed
        into place): a ``kill -9`` in between leaves two tagged for a moment, never none, and
        the next promotion demotes the extra one."""
        with exclusive(self.lock):
            chosen = self.get(model_id)
            if PRODUCTION_TAG not in chosen.tags:
                chosen.tags.append(PRODUCTION_TAG)
            chosen.published = True
            self._write(chosen)
            for other in self.list(chosen.name):
                if other.id != chosen.id and PRODUCTION_TAG in other.tags:
                    other.tags = [t for t in other.tags if t != PRODUCTION_TAG]
                    self._write(other)
        return chosen

"""The step cache across runs: a step marked ``cache`` is reused when its script, its code
digest, its arguments and the files its path options read (a digest of each, an empty option's
runtime default included) are unchanged, the files it reported still exist and the models and
dataset versions it names still resolve (the registry checks a model's sha256).

Paths inside the workspace are kept relative to it and resolved against the current
:func:`~asl_recognition.paths.workspace` on lookup, so a moved workspace keeps its hits and a
hit never points into another workspace.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from asl_recognition.hashing import sha256_file
from asl_recognition.locks import exclusive
from asl_recognition.options import specs
from asl_recognition.paths import workspace
from asl_recognition.pipeline.clearml_controller import code_digest
from asl_recognition.pipeline.dag import Step, UnresolvedReference, filled_value
from asl_recognition.pipeline.runs import read_json, write_json
from asl_recognition.store.local import DATASET_ID

CACHE_NAME = "step_cache.json"
# Outputs naming a registered model / a dataset version: checked before a hit is reused.
MODEL_ID_KEYS = ("model_id",)
DATASET_ID_KEYS = ("dataset_id", "landmarks_id", "raw_dataset_id", "raw_dataset_ids")
# An entry's list of the outputs stored relative to the workspace (absent in older entries).
RELATIVE = "workspace_relative"


def _inside(path: str, root: Path) -> str | None:
    """``path`` relative to ``root`` (POSIX form) when it lies inside it, else None."""
    for candidate in (Path(os.path.normpath(path)), Path(path).resolve()):
        try:
            return candidate.relative_to(root).as_posix()
        except ValueError:
            continue
    return None


def _portable(outputs: Mapping[str, Any], root: Path) -> tuple[dict[str, Any], list[str]]:
    """The outputs with absolute paths inside ``root`` made relative, and which ones were."""
    stored, relative = dict(outputs), []
    for name, value in outputs.items():
        if isinstance(value, str) and os.path.isabs(value):
            inside = _inside(value, root)
            if inside is not None:
                stored[name] = inside
                relative.append(name)
    return stored, relative


def _resolved(entry: Mapping[str, Any], root: Path) -> tuple[dict[str, Any], str | None]:
    """The entry's outputs with its relative paths under ``root``; the reason it is unusable
    (a file gone, or an absolute path of an older entry outside this workspace) or None."""
    outputs = dict(entry["outputs"])
    relative = entry.get(RELATIVE)
    for name in relative or ():
        outputs[name] = str(root / outputs[name])
    for name, value in outputs.items():
        if not (isinstance(value, str) and os.path.isabs(value)):
            continue
        if relative is None and _inside(value, root) is None:
            # written before paths were stored relative: most likely another (the old) workspace
            return outputs, f"{name} {value} is outside the workspace {root}"
        if not os.path.exists(value):
            return outputs, f"{name} {value} no longer exists"
    return outputs, None


def _ids(outputs: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for key in keys:
        value = outputs.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item and item not in found:
                found.append(item)
    return found


def _intact(store: Any, dataset_id: str) -> None:
    """The version, or why not: a stored file lost or altered makes the step run again (and
    repair it), where a hit had handed every later step a version it refuses."""
    version = store.get(dataset_id=dataset_id)
    if not store.intact(version):
        raise ValueError(f"a stored file of {version.name} {version.version} was lost or altered")


def ids_still_valid(outputs: Mapping[str, Any]) -> str | None:
    """Why a model or dataset version the outputs name no longer resolves, or None.

    The backends are those the steps use (:func:`get_registry`/:func:`get_store`, ClearML with a
    server, the workspace's files without): the registry's ``get`` checks the model's sha256, the
    store a dataset version's stored files.
    """
    checks: list[tuple[str, Callable[[], Any]]] = []
    models = _ids(outputs, MODEL_ID_KEYS)
    datasets = _ids(outputs, DATASET_ID_KEYS)
    if models:
        from asl_recognition.registry import get_registry

        registry = get_registry()
        checks += [(f"model {m}", lambda m=m: registry.get(m)) for m in models]
    if datasets:
        from asl_recognition.store import get_store

        store = get_store()
        checks += [(f"dataset {d}", lambda d=d: _intact(store, d)) for d in datasets]
    for what, check in checks:
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - anything unconfirmed is not reused
            said = str(exc) or type(exc).__name__
            return said if what.split()[-1] in said else f"{what}: {said}"
    return None


def pinned_references(outputs: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """A skipped step's outputs with each dataset named by reference (``raw_version=latest``,
    a version; several, comma-separated) read as its id now, in the dataset ``names`` gives
    for its output: as text, ``latest`` keyed the next steps' cache the same for newer raw
    data, and they reused the dataset and model of the old. LookupError: no such version."""
    from asl_recognition.data.sources import split_list
    from asl_recognition.store import get_store

    pinned = dict(outputs)
    for key, name in names.items():
        refs = split_list(pinned.get(key)) if pinned.get(key) else []
        if any(not DATASET_ID.fullmatch(ref) for ref in refs):
            store = get_store()
            ids = [
                ref if DATASET_ID.fullmatch(ref) else store.version_for(name, ref).id
                for ref in refs
            ]
            pinned[key] = ",".join(ids)
    return pinned


def _read_paths(step: Step, args: Mapping[str, Any], repo_root: Path) -> list[Path]:
    """The files and folders the step's path options read (written ones excepted), an empty
    option's runtime default (``default_from``) included; relative to the repository root."""
    paths = []
    for spec in specs(step.options):
        if not spec.path or spec.written:
            continue
        value = args.get(spec.name)
        if value in (None, "", []) and spec.default_from is not None:
            value = spec.default_from()
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or item in ("", "none") or "://" in item:
                continue
            name, sep, rest = item.partition("=")
            paths.append(repo_root / (rest if sep and "/" not in name else item))
    return paths


def content_digest(path: Path) -> str:
    """A file's sha256; a folder's files by relative path, size and mtime (a rewrite moves
    them); ``missing`` for neither."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for folder, dirs, names in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(names):
            file = Path(folder) / name
            with contextlib.suppress(OSError):
                st = file.stat()
                digest.update(
                    f"{file.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
                )
    return digest.hexdigest()


class StepCache:
    """``<runs>/step_cache.json``: one entry per (step, code digest, arguments).

    ``out``: where a dropped entry is reported (one line; default stdout).
    """

    def __init__(self, root: Path, repo_root: Path, out: IO[str] | None = None) -> None:
        self.path = root / CACHE_NAME
        self.repo_root = repo_root
        self.out = out

    @property
    def _lock(self) -> Path:
        return self.path.with_name(CACHE_NAME + ".lock")

    def read(self, step: Step, args: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(path, what it holds now) of each file and folder the step's path options read,
        in option order: measured once per step, for its cache key and its resume check."""
        return [(str(p), content_digest(p)) for p in _read_paths(step, args, self.repo_root)]

    def key(
        self, step: Step, argv: list[str], read: Sequence[tuple[str, str]] | None = None
    ) -> str:
        """What a reuse must match: the step, its script, its code digest, its arguments and
        what the files its path options name hold now (``read``): the same name may hold other
        weights or photos than when the entry was stored."""
        payload = json.dumps(
            {
                "step": step.name,
                "script": step.script,
                "code": code_digest(step, self.repo_root),
                "argv": argv,
                "inputs": dict(self.read(step, {}) if read is None else read),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    @staticmethod
    def inputs(read: Sequence[tuple[str, str]]) -> str:
        """``read`` as one digest, by option order, not absolute name: a moved checkout reads
        the same files."""
        return hashlib.sha256(json.dumps([digest for _, digest in read]).encode()).hexdigest()

    def resume_blocker(
        self,
        step: Step,
        info: Mapping[str, Any],
        params: Mapping[str, Any],
        outputs: Mapping[str, Any],
    ) -> str | None:
        """Why a step done earlier in a run may not be reused by its resume, or None: a file or
        folder it read changed since (a resume after the raw folder was edited had trained and
        served its photos as they were), or a model or dataset it names no longer resolves."""
        if info.get("status") == "skipped":
            return None  # it ran nothing
        recorded = info.get("inputs")
        try:
            args = {k: filled_value(v, params, outputs) for k, v in step.args.items()}
        except UnresolvedReference as exc:
            return str(exc.args[0])
        if recorded is not None and self.inputs(self.read(step, args)) != recorded:
            return "a file or folder its path options read changed since it ran"
        return ids_still_valid(info.get("outputs", {}))

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The entry of ``key`` (its paths under the current workspace) when its files are still
        there and its model and dataset ids still resolve; otherwise the entry is dropped."""
        entry = read_json(self.path, {}).get(key)
        if not entry:
            return None
        outputs, reason = _resolved(entry, workspace())
        if reason is None:
            reason = ids_still_valid(outputs)
        if reason is not None:
            self.drop(key)
            out = self.out or sys.stdout
            out.write(
                f"{entry.get('step', '?')}: not reusing the cached result of run "
                f"{entry.get('run_id', '?')} ({reason}); running the step again\n"
            )
            out.flush()
            return None
        return {**entry, "outputs": outputs}

    def drop(self, key: str) -> None:
        """Remove the entry of ``key`` (no-op when absent)."""
        with exclusive(self._lock):
            cache = read_json(self.path, {})
            if cache.pop(key, None) is not None:
                write_json(self.path, cache)

    def store(self, key: str, step: Step, run_id: str, outputs: Mapping[str, Any]) -> None:
        """Add one entry; runs of other parameters may write theirs at the same time."""
        stored, relative = _portable(outputs, workspace())
        with exclusive(self._lock):
            cache = read_json(self.path, {})
            cache[key] = {
                "step": step.name,
                "run_id": run_id,
                "outputs": stored,
                RELATIVE: relative,
            }
            write_json(self.path, cache)

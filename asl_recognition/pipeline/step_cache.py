"""The step cache across runs: a step marked ``cache`` is reused when its script, its code
digest and its arguments are unchanged and the files it reported still exist.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asl_recognition.locks import exclusive
from asl_recognition.pipeline.clearml_controller import code_digest
from asl_recognition.pipeline.dag import Step
from asl_recognition.pipeline.runs import read_json, write_json

CACHE_NAME = "step_cache.json"


def _outputs_still_valid(outputs: Mapping[str, Any]) -> bool:
    """A cached step is reused only if the files it reported (absolute paths) still exist."""
    for value in outputs.values():
        if isinstance(value, str) and os.path.isabs(value) and not os.path.exists(value):
            return False
    return True


class StepCache:
    """``<runs>/step_cache.json``: one entry per (step, code digest, arguments)."""

    def __init__(self, root: Path, repo_root: Path) -> None:
        self.path = root / CACHE_NAME
        self.repo_root = repo_root

    def key(self, step: Step, argv: list[str]) -> str:
        """What a reuse must match: the step, its script, its code digest and its arguments."""
        payload = json.dumps(
            {
                "step": step.name,
                "script": step.script,
                "code": code_digest(step, self.repo_root),
                "argv": argv,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The entry of ``key`` when its outputs are still on disk."""
        entry = read_json(self.path, {}).get(key)
        if entry and _outputs_still_valid(entry["outputs"]):
            return entry
        return None

    def store(self, key: str, step: Step, run_id: str, outputs: Mapping[str, Any]) -> None:
        """Add one entry; runs of other parameters may write theirs at the same time."""
        with exclusive(self.path.with_name(CACHE_NAME + ".lock")):
            cache = read_json(self.path, {})
            cache[key] = {"step": step.name, "run_id": run_id, "outputs": dict(outputs)}
            write_json(self.path, cache)

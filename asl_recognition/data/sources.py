"""Named raw sources (``kaggle=../data/kaggle``) and the signer id carried by file names.

Several sources merge into one ``ASL_raw`` version; each file row keeps the name of the source it
came from so that reports, splits and held-out evaluation can be broken down per source.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Massey names read ``hand1_a_bot_seg_1_cropped.jpeg``: the signer is ``hand1``.
DEFAULT_SIGNER_PATTERN = r"(hand\d+)"
# A source name prefixes dataset paths and appears in ``SOURCE:SIGNER`` holdout patterns.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$")


class SourceSpecError(ValueError):
    """A --source / holdout option that cannot be honoured; the message is one line."""


@dataclass(frozen=True)
class SourceSpec:
    name: str
    path: Path


def _items(value: str | Sequence[str] | None, strict: bool) -> list[str]:
    """None, one string, a JSON list (as a ClearML web-UI edit stores it) or a sequence.

    ``strict``: text that starts like a JSON list but is not one is refused, not taken as text.
    """
    if value is None:
        return []
    if not isinstance(value, str):
        return [str(v) for v in value]
    text = value.strip()
    if text.startswith("["):
        try:
            return [str(v).strip() for v in json.loads(text)]
        except json.JSONDecodeError as exc:
            if strict:
                raise SourceSpecError(f"--source: not a JSON list: {text!r}") from exc
    return [text] if text else []


def split_name(spec: str) -> tuple[str, str] | None:
    """``NAME=PATH`` -> (name, path); None for a bare path (an ``=`` inside a path is no name)."""
    name, sep, path = spec.partition("=")
    if not sep or "/" in name or "\\" in name:
        return None
    return name, path


def parse_sources(value: str | Sequence[str] | None) -> list[SourceSpec]:
    """``NAME=PATH`` or a bare ``PATH`` (named after its folder, or the zip's stem) per source.

    Refuses malformed specs and duplicate names: the name is the key files are tagged with.
    """
    specs: list[SourceSpec] = []
    for raw in _items(value, strict=True):
        named = split_name(raw)
        if named is None:
            path = raw
            name = Path(path.rstrip("/\\")).stem or Path(path).resolve().name
        else:
            name, path = named
        name, path = name.strip(), path.strip()
        if named is not None and (not name or not path):
            raise SourceSpecError(f"--source {raw!r}: expected NAME=PATH with both parts")
        if not path:
            raise SourceSpecError("--source: empty path")
        if "://" in raw:  # read as a local path, https://h/a.zip was "<cwd>/https:/h/a.zip"
            raise SourceSpecError(
                f"--source {raw!r}: a storage URL, which validate_raw does not download: "
                "download it and give the folder or .zip"
            )
        if not _NAME.match(name):
            raise SourceSpecError(
                f"--source {raw!r}: name {name!r} must be letters, digits, ' ', '_', '-', '+', '.'"
            )
        specs.append(SourceSpec(name=name, path=Path(path).expanduser()))
    if not specs:
        raise SourceSpecError("no --source given")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise SourceSpecError(
                f"duplicate source name {spec.name!r}: give each source its own NAME=PATH"
            )
        seen.add(spec.name)
    return specs


def format_sources(values: Iterable[str]) -> str:
    """One ClearML parameter for the repeatable option: the spec itself, or a JSON list."""
    values = list(values)
    return values[0] if len(values) == 1 else json.dumps(values)


def signer_of(path: str, pattern: str | re.Pattern[str] = DEFAULT_SIGNER_PATTERN) -> str | None:
    """The signer id in a file name (first group of ``pattern``, else the whole match)."""
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    m = regex.search(PurePosixPath(path).name)
    if not m:
        return None
    return m.group(1) if regex.groups else m.group(0)


def split_list(value: str | Sequence[str] | None) -> list[str]:
    """Repeatable options that may also arrive comma-separated (``a,b``) or as a JSON list."""
    items = _items(value, strict=False)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


RAW_ENV = "ASL_RAW"


def default_raw_sources() -> list[str]:
    """validate_raw's sources when it is given none: ``$ASL_RAW`` (one spec or several,
    comma-separated), else the bundled sample. One rule for the step and for the local
    executor, which records it in a run's parameters (other data: another run)."""
    from asl_recognition.paths import SAMPLE_DATA

    return [s for s in os.environ.get(RAW_ENV, "").split(",") if s] or [str(SAMPLE_DATA)]

"""Recipes: a YAML file of step options plus ``step.option=value`` overrides.

A recipe names only what differs from the options' declared defaults::

    # configs/run.yaml
    publish_dataset:
      image_size: 64
    train:
      epochs: 12

``python pipelines/asl_pipeline.py --config configs/run.yaml train.epochs=40`` overrides one
value. Every value is typed by the option's one declaration (:mod:`asl_recognition.options`),
so a typo in a name or a value fails before anything runs. A small layer over the typed options
rather than Hydra/OmegaConf: the options classes already carry types, defaults and help, and
ClearML needs flat ``<step>/<option>`` parameters, which the recipe maps to one to one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from asl_recognition.data.sources import parse_sources
from asl_recognition.options import OptionError, convert, specs
from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.dag import Dag, param_name


class RecipeError(ValueError):
    """A recipe or override names an unknown step/option, or gives a value that does not fit."""


def _option_spec(dag: Dag, step_name: str, option: str) -> Any:
    try:
        step = dag.step(step_name)
    except KeyError:
        raise RecipeError(
            f"unknown step {step_name!r}; steps: {', '.join(dag.step_names())}"
        ) from None
    for spec in specs(step.options):
        if spec.name == option:
            if option in step.wired:
                raise RecipeError(f"{step_name}.{option} is wired to {step.wired[option]}")
            return step, spec
    names = ", ".join(s.name for s in specs(step.options) if s.name not in step.wired)
    raise RecipeError(f"{step_name} has no option {option!r}; options: {names}")


def _set(dag: Dag, values: dict[str, Any], key: str, value: Any) -> None:
    """Type one ``step.option`` (or pipeline-level ``name``) value into ``values``."""
    if "." not in key:
        known = {p.name for p in dag.params if "/" not in p.name}
        if key not in known:
            raise RecipeError(f"unknown pipeline parameter {key!r}; known: {', '.join(known)}")
        values[key] = "" if value is None else str(value)
        return
    step_name, option = key.split(".", 1)
    step, spec = _option_spec(dag, step_name, option)
    try:
        values[param_name(step, option)] = convert(spec, value)
    except OptionError as exc:
        raise RecipeError(f"{key}: {exc}") from None


MAX_RECIPE_BYTES = 64 * 1024  # a recipe is a screenful of options; anything larger is not one


class _RecipeLoader(yaml.SafeLoader):
    """Safe YAML without aliases (a few nested ones expand to gigabytes) or duplicate keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(
                problem="aliases (*name) are not allowed", problem_mark=mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _recipe_text(path: Path) -> str:
    """The file's text: a regular file of at most ``MAX_RECIPE_BYTES``, in UTF-8."""
    try:
        if not path.is_file():
            raise RecipeError(f"cannot read recipe {path}: not a regular file")
        with path.open("rb") as handle:
            data = handle.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeError(f"cannot read recipe {path}: larger than {MAX_RECIPE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"cannot read recipe {path}: not UTF-8 text (byte {exc.start})"
        ) from None


def read_file(path: str | Path) -> dict[str, Any]:
    """The recipe file as ``{"step.option": value}`` (top-level scalars stay as they are)."""
    text = _recipe_text(Path(path))
    try:
        data = yaml.load(text, Loader=_RecipeLoader) or {}
    except yaml.YAMLError as exc:  # its text spans several lines (snippet and caret)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"cannot read recipe {path}: {problem}{where}") from None
    if not isinstance(data, Mapping):
        raise RecipeError(f"{path}: expected a mapping of steps to options")
    return flatten(data)


def flatten(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train": {"epochs": 12}}`` -> ``{"train.epochs": 12}`` (top-level scalars kept)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{option}": v for option, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {text!r}: expected step.option=value")
    return key.strip(), value.strip()


def load_recipe(
    dag: Dag, path: str | Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Pipeline parameter values (``{"train/epochs": 12}``) from a file and overrides."""
    pairs = list(read_file(path).items()) if path else []
    pairs += [parse_override(text) for text in overrides]
    return typed_values(dag, pairs)


def recipe_sources(dag: Dag, path: str | Path) -> dict[str, Path]:
    """The raw photo folders a recipe's ``validate_raw`` reads, by source name, as the step
    parses them (repo-relative paths resolved): what a bench or a data test of that recipe
    must look at, rather than a second list of folders."""
    sources = parse_sources(load_recipe(dag, path)["validate_raw/source"])
    return {spec.name: REPO_ROOT / spec.path for spec in sources}


def typed_values(dag: Dag, pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """``[("train.epochs", "12")]`` -> ``{"train/epochs": 12}``, each typed by its option."""
    values: dict[str, Any] = {}
    for key, value in pairs:
        _set(dag, values, key, value)
    return values


def as_nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train/epochs": 12}`` -> ``{"train": {"epochs": 12}}``: the recipe as recorded."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        step, sep, option = key.partition("/")
        if sep:
            nested.setdefault(step, {})[option] = value
        else:
            nested[key] = value
    return nested


# Leave it in the recorded recipe: each entry's digest as launched tells an edited entry.
RECIPE_DIGEST_KEY = "_launched_sha256"


def _digest(value: Any, length: int = 8) -> str:
    """The first ``length`` hex digits of the sha256 of ``value`` as sorted JSON."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def recipe_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe as a configuration object, with the digest of each entry as launched (same
    shape: a dotted key would be a path in the configuration's HOCON text)."""
    nested = as_nested(values)
    digests = {
        key: (
            {o: _digest(v) for o, v in value.items()}
            if isinstance(value, Mapping)
            else _digest(value)
        )
        for key, value in nested.items()
    }
    return {**nested, RECIPE_DIGEST_KEY: digests}


def edited_recipe(dag: Dag, recorded: Mapping[str, Any] | None) -> dict[str, Any]:
    """The step values edited in the web UI's recipe object, and only those.

    An entry as launched does not win over a pipeline parameter edited beside it: with one
    digest for the whole recipe, a recipe edited anywhere had put back, in silence, the launched
    value of every parameter the user had changed in ``Args``.
    """
    nested = dict(recorded or {})
    digests = nested.pop(RECIPE_DIGEST_KEY, None)
    launched = flatten(digests) if isinstance(digests, Mapping) else {}
    if isinstance(digests, str):  # recorded by an older launch: one digest for the whole
        changed = digests != _digest(nested, 16)
        return typed_values(dag, list(flatten(nested).items())) if changed and nested else {}
    pairs = [(k, v) for k, v in flatten(nested).items() if launched.get(k) != _digest(v)]
    return typed_values(dag, pairs)

"""Typed task options: each option is declared once, as a field of a dataclass.

Everything else is generated from these classes: the argparse command line, the values connected
to ClearML (``Args/*``, editable in the web UI and typed again on the way back), the pipeline's
per-step parameters, the local executor's command lines and the README's option tables.

No option is ``required`` on the command line: a ClearML agent runs ``python -u <script>`` with
no arguments and the values come from the connected parameters. A field declared with
``required=True`` is checked after ``Task.init`` (:func:`missing`), so the task records a clear
failure instead of argparse exiting before ClearML sees anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from asl_recognition.option_text import OptionError, read_list, read_scalar

T = TypeVar("T")
# Seeds go to numpy's RandomState, which takes 0 .. 2**32 - 1, and to torch.
MAX_SEED = 2**32 - 1


def option(
    default: Any,
    help: str,
    *,
    choices: Iterable[Any] | None = None,
    required: bool = False,
    low: float | None = None,
    high: float | None = None,
    metavar: str | None = None,
    path: bool = False,
    remote_fallback: str | None = None,
    written: bool = False,
    default_from: Callable[[], str] | None = None,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field carrying what the CLI, the web UI and the README show for it.

    ``path``: the value names local files (``[NAME=]PATH``), which the pipeline rewrites so that
    a step run elsewhere finds them (or refuses, when it cannot). ``remote_fallback``: for a path
    the run can do without (an extra evaluation folder), the value a step on an agent gets
    instead of a refusal when the path cannot travel. ``written``: a path the step writes (an
    output folder), so the commit an agent clones need not hold it. ``default_from``: where an
    empty path option reads from, decided where the step runs (a folder that may or may not be
    there), so a cached result can be keyed by what was read. ``check``: a rule over the whole
    typed value that one item's type and range cannot say (three split fractions, none empty);
    it raises ``ValueError`` with a one-line reason, and runs wherever a value is converted (the
    command line, a recipe, a pipeline parameter, a web-UI edit), so a value its task would
    refuse is refused before any step runs.
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "required": required,
        "low": low,
        "high": high,
        "metavar": metavar,
        "path": path,
        "remote_fallback": remote_fallback,
        "written": written,
        "default_from": default_from,
        "check": check,
    }
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One declared option, its type taken apart into what a converter needs."""

    name: str
    base: type
    is_list: bool
    optional: bool
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    required: bool
    low: float | None
    high: float | None
    metavar: str | None
    path: bool = False
    remote_fallback: str | None = None
    written: bool = False
    default_from: Callable[[], str] | None = None
    check: Callable[[Any], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def type_name(self) -> str:
        name = f"list[{self.base.__name__}]" if self.is_list else self.base.__name__
        return f"{name} | None" if self.optional else name


def _split_type(annotation: Any) -> tuple[type, bool, bool]:
    """``int | None`` -> (int, False, True); ``list[str]`` -> (str, True, False)."""
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        annotation = rest[0]
    if typing.get_origin(annotation) in (list, tuple, Sequence):
        return typing.get_args(annotation)[0], True, optional
    return annotation, False, optional


def specs(cls: type) -> list[OptionSpec]:
    """The options of an options class, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        base, is_list, optional = _split_type(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        meta = f.metadata
        out.append(
            OptionSpec(
                f.name,
                base,
                is_list,
                optional,
                default,
                meta.get("help", ""),
                meta.get("choices"),
                meta.get("required", False),
                meta.get("low"),
                meta.get("high"),
                meta.get("metavar"),
                meta.get("path", False),
                meta.get("remote_fallback"),
                meta.get("written", False),
                meta.get("default_from"),
                meta.get("check"),
            )
        )
    return out


def convert(spec: OptionSpec, value: Any) -> Any:
    """The typed value of one option from whatever the CLI, a config file or ClearML gave."""
    if _skip_word(spec, value):
        return spec.remote_fallback
    if spec.optional and (value is None or (isinstance(value, str) and value in ("", "None"))):
        return None
    if value is None:
        raise OptionError(f"{spec.flag}: a value is needed")
    if spec.is_list:
        typed: Any = [read_scalar(spec, item) for item in read_list(spec, value)]
    else:
        typed = read_scalar(spec, value)
    if spec.check is not None:
        try:
            spec.check(typed)
        except (TypeError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "not accepted"
            raise OptionError(
                reason if reason.startswith(spec.flag) else f"{spec.flag}: {reason}"
            ) from None
    return typed


def _skip_word(spec: OptionSpec, value: Any) -> bool:
    """``value`` is the option's own word for "go without it" (``remote_fallback``: ``none``),
    in any case. ``None`` typed in the web UI for ``--external`` had been read as empty, the
    default folder, which was then scored while the task showed ``None``."""
    word = spec.remote_fallback
    return word is not None and isinstance(value, str) and value.strip().lower() == word.lower()


def value_as_text(value: Any) -> str:
    """One value as the web UI shows it and :func:`convert` reads it back (lists as JSON)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def _typed(cls: type, values: Mapping[str, Any], strict: bool) -> dict[str, Any]:
    """``values`` converted by their options; unknown names refused when ``strict``, else
    dropped."""
    known = {s.name: s for s in specs(cls)}
    unknown = sorted(set(values) - set(known))
    if strict and unknown:
        raise OptionError(f"unknown option(s): {', '.join(unknown)}")
    return {name: convert(known[name], v) for name, v in values.items() if name in known}


def from_mapping(cls: type[T], values: Mapping[str, Any], strict: bool = True) -> T:
    """An options object from (possibly text) values; unknown keys are refused when strict."""
    return cls(**_typed(cls, values, strict))


def as_params(options: Any) -> dict[str, Any]:
    """Plain values for ``task.connect`` and JSON (lists stay lists)."""
    return dataclasses.asdict(options)


def missing(options: Any) -> list[str]:
    """Flags of required options that have no value."""
    return [
        s.flag
        for s in specs(type(options))
        if s.required and getattr(options, s.name) in (None, "", [])
    ]


def _argparse_type(spec: OptionSpec) -> Any:
    def parse(text: str) -> Any:
        try:
            return convert(spec, text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None

    parse.__name__ = spec.base.__name__
    return parse


def shown_default(spec: OptionSpec) -> str:
    """The default as a person reads it: lists comma-joined, an empty value as 'none'."""
    if spec.required:
        return "required"
    if spec.default in (None, "", []):  # "none" would name the option's skip word
        return "empty" if spec.remote_fallback else "none"
    if spec.is_list:
        return ",".join(str(v) for v in spec.default)
    return str(spec.default)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` shows each option's declared default (argparse only sees SUPPRESS)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        spec = getattr(action, "option_spec", None)
        text = action.help or ""
        return f"{text} (default: {shown_default(spec)})" if spec is not None else text


def add_options(parser: argparse.ArgumentParser, cls: type, group: str | None = None) -> None:
    """Add one ``--flag`` per field; absent flags keep the dataclass default."""
    target = parser.add_argument_group(group) if group else parser
    for spec in specs(cls):
        kwargs: dict[str, Any] = {"dest": spec.name, "default": argparse.SUPPRESS}
        kwargs["help"] = spec.help
        if spec.base is bool and not spec.is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = str if spec.is_list else _argparse_type(spec)
            if spec.metavar:
                kwargs["metavar"] = spec.metavar
            elif spec.choices is not None:
                kwargs["metavar"] = "{" + ",".join(str(c) for c in spec.choices) + "}"
            if spec.is_list:
                kwargs["action"] = "extend"
                kwargs["nargs"] = "+"
        action = target.add_argument(spec.flag, **kwargs)
        action.option_spec = spec  # type: ignore[attr-defined]


def build_parser(cls: type, description: str) -> argparse.ArgumentParser:
    """The command line of one task, generated from its options class."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_options(parser, cls)
    return parser


def parse(cls: type[T], argv: Sequence[str] | None, description: str = "") -> T:
    """Options from a command line; nothing is required here (see :func:`missing`)."""
    parser = build_parser(cls, description)
    namespace = parser.parse_args(argv)
    try:
        return from_mapping(cls, vars(namespace))
    except OptionError as exc:
        parser.error(str(exc))


def to_argv(cls: type, values: Mapping[str, Any]) -> list[str]:
    """Command-line arguments that give ``values`` to a task run as a subprocess.

    ``None`` and empty lists are left out, so the task's own default applies. Values are
    attached with ``=`` (one ``--flag=item`` per list item), so that one starting with ``-`` is
    not taken for a flag.
    """
    known = {s.name: s for s in specs(cls)}
    argv: list[str] = []
    for name, value in values.items():
        spec = known[name]
        value = convert(spec, value)
        if value is None or value == []:
            continue
        if spec.base is bool and not spec.is_list:
            argv.append(spec.flag if value else "--no-" + spec.flag[2:])
        elif spec.is_list:
            argv += [f"{spec.flag}={v}" for v in value]
        else:
            argv.append(f"{spec.flag}={value}")
    return argv


def settle(cls: type[T], settings: T | None = None, **changes: Any) -> T:
    """``settings`` (else the declared defaults) with single fields replaced by name.

    How a stage function takes its task's options without restating their defaults: the task
    hands over its typed options, a test or a bench changes only what it needs. Each change goes
    through the same converter as the command line, so the stage reads typed, checked values
    whoever called it (a bad one is an ``OptionError`` naming its flag).
    """
    base = settings if settings is not None else cls()
    return dataclasses.replace(base, **_typed(cls, changes, strict=True))

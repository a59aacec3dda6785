"""Reading one option's value from what a person typed: the command line, a recipe, the web UI.

Each refusal is an :class:`OptionError` of one line that names the option's flag and shows the
value (cut short: a pasted megabyte stays one line). ``spec`` is an ``options.OptionSpec``.
"""

from __future__ import annotations

import ast
import math
from typing import Any

TRUE_WORDS = ("1", "true", "yes", "on")
# An empty yes/no field (cleared in the web UI) is no answer: an error, as for a number.
FALSE_WORDS = ("0", "false", "no", "off")


class OptionError(ValueError):
    """A value that does not fit its option: wrong type, out of range, not a choice, missing."""


# A value is echoed in its error up to this many characters: a pasted megabyte stays one line.
SHOWN_VALUE_CHARS = 80


def quoted(value: Any) -> str:
    """``repr(value)``, cut to ``SHOWN_VALUE_CHARS`` with its length said."""
    text = repr(value)
    if len(text) <= SHOWN_VALUE_CHARS:
        return text
    return f"{text[:SHOWN_VALUE_CHARS]}... ({len(str(value))} characters)"


def read_scalar(spec: Any, value: Any) -> Any:
    """One value converted to the option's base type, or a one-line ``OptionError``."""
    where = f"{spec.flag}: {quoted(value)}"
    if spec.base is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise OptionError(f"{where} is not a yes/no value (true/false)")
    if spec.base in (int, float):
        if isinstance(value, bool):
            raise OptionError(f"{where} is not a number")
        number = _number(value, where)
        if spec.base is int:
            if number != int(number):
                raise OptionError(f"{where} is not a whole number")
            number = int(number)
        if spec.low is not None and number < spec.low:
            raise OptionError(f"{where} is below the smallest allowed value {_shown(spec.low)}")
        if spec.high is not None and number > spec.high:
            raise OptionError(f"{where} is above the largest allowed value {_shown(spec.high)}")
        value = number
    else:
        value = str(value)
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(repr(c) for c in spec.choices)
        raise OptionError(f"{where} is not one of {allowed}")
    return value


def _shown(bound: float) -> str:
    """A range bound as written: 4294967295, not 4.29497e+09."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _number(value: Any, where: str) -> int | float:
    """An int where the text is one (read exactly: through a float, 2**53 + 1 would become
    2**53), else a finite float ("3.0" from the web UI stays acceptable for an int)."""
    text = str(value).strip()
    if isinstance(value, int) or text.lstrip("+-").isdigit():
        try:
            return int(text)
        except ValueError:
            raise OptionError(f"{where} is not a number") from None
    try:
        number = float(text) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{where} is not a number") from None
    if not math.isfinite(number):
        raise OptionError(f"{where} is not a finite number")
    return number


def read_list(spec: Any, value: Any) -> list[Any]:
    """A list from the CLI, from JSON/Python-literal text (the web UI) or ``a,b`` text.

    Bracketed text must be a list or tuple literal: ``(5)`` is the number 5 and ``('ab')`` the
    text 'ab', which ``list()`` turned into a TypeError or the text's characters.
    """
    if isinstance(value, (list, tuple)):
        items: list[Any] = []
        for item in value:
            items += read_list(spec, item) if isinstance(item, str) and "," in item else [item]
        return items
    text = str(value).strip()
    if text.startswith(("[", "(")):
        try:
            parsed = ast.literal_eval(text)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            parsed = None
        if not isinstance(parsed, (list, tuple)):
            raise OptionError(
                f'{spec.flag}: {quoted(text)} is not a list (write ["a", "b"] or a,b)'
            ) from None
        return list(parsed)
    return [part.strip() for part in text.split(",") if part.strip()]

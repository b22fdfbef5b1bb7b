"""The rules every setting value is checked against, one per field, declared beside the field in its section
(`LIMITS`): its type (a bool is not a number, a list is not a number), finite where it is a number, and a range or a
set of choices. Pure functions; `check_value` checks one value, `check_section` one whole section. The entry point
that applies them to a file, a command line or a checkpoint's settings is `loading.validate_settings`."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import CtsliceError


class ConfigError(CtsliceError):
    """A setting with a wrong type or value; the message names where it came from, the key and the value."""


@dataclass(frozen=True)
class Limit:
    """A closed range [low, high] for a number (open at an end when low_open / high_open)."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    unit: str = ""

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if not self.low_open and not self.high_open:
            return f"from {_num(self.low)} to {_num(self.high)}{unit}"
        return (f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                f"{')' if self.high_open else ']'}{unit}")


@dataclass(frozen=True)
class OneOf:
    """One of a few strings."""

    choices: tuple[str, ...]

    def holds(self, value: str) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return f"one of {', '.join(self.choices)}"


@dataclass(frozen=True)
class Pattern:
    """A string matching a regular expression (whole), described in words."""

    regex: str
    words: str

    def holds(self, value: str) -> bool:
        return re.fullmatch(self.regex, value) is not None

    def __str__(self) -> str:
        return self.words


Rule = Limit | OneOf | Pattern

Relations = Iterator[tuple[tuple[str, ...], str]]
"""What a section's `relations()` yields: the keys a rule between fields involves, and what is wrong."""

SEED = Limit(0, 2**32 - 1)
"""numpy's seeds are 32-bit; torch and the split's hash take those too."""

DEVICE = Pattern(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda, cuda:N or mps")
"""The one device vocabulary of train, evaluate and predict (resolved by `model/device.resolve_device`)."""

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "none"}
_KIND_WORDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
               dict: "a table", type(None): "none"}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def show(value: Any) -> str:
    """A value as the user wrote it (TOML spelling for booleans), shortened."""
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def kind(value: Any) -> str:
    return _KIND_WORDS.get(type(value), f"a {type(value).__name__}")


def _options(hint: Any) -> tuple[Any, ...]:
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    return typing.get_args(hint) if union else (hint,)


def has_type(value: Any, hint: Any) -> bool:
    """isinstance for the plain field types used here (int, float, str, bool and `X | None`); a bool is neither an
    int nor a float, and an int is a float."""
    for option in _options(hint):
        if option is type(None) and value is None:
            return True
        if option is bool and isinstance(value, bool):
            return True
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if option is str and isinstance(value, str):
            return True
    return False


def describe(hint: Any, rule: Rule | None, none_word: str = "none") -> str:
    """'an integer from 1 to 4096', 'a number in (0, 1]', 'one of cosine, plateau, none' (or none)."""
    words = [_TYPE_WORDS.get(o, getattr(o, "__name__", str(o))) for o in _options(hint) if o is not type(None)]
    text = " or ".join(words)
    if isinstance(rule, Limit):
        text += f" {rule}"
    elif rule is not None:
        text = str(rule)
    if type(None) in _options(hint):
        text += f" (or {none_word})"
    return text


@functools.cache
def _hints(section: type) -> dict[str, Any]:
    return typing.get_type_hints(section)


def check_value(section: type, name: str, value: Any) -> str | None:
    """What is wrong with `value` for field `name` of the section class, as 'must be ..., got ...'; None if
    nothing is."""
    hint = _hints(section)[name]
    rule = getattr(section, "LIMITS", {}).get(name)
    none_word = getattr(section, "NONE_WORDS", {}).get(name, "none")
    wanted = describe(hint, rule, none_word)
    if not has_type(value, hint):
        return f"must be {wanted}, got {show(value)} ({kind(value)})"
    if value is None or isinstance(value, bool) or rule is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite {wanted.removeprefix('a ')}, got {show(value)}"
    if not rule.holds(value):
        return f"must be {wanted}, got {show(value)}"
    return None


def check_section(section: Any, where: str = "", origins: dict[str, str] | None = None) -> None:
    """Every field of a section instance against its rule, then the rules between its fields (`relations`).
    Raises ConfigError: '<where> [<section>]: <key> must be ..., got ...'. `origins` names, per key, the layer a
    value came from (a file, the command line), for the rules between fields."""
    cls = type(section)
    name = getattr(cls, "SECTION", cls.__name__)
    for f in dataclasses.fields(section):
        problem = check_value(cls, f.name, getattr(section, f.name))
        if problem:
            raise ConfigError(f"{_prefix((origins or {}).get(f.name, where), name)}{f.name} {problem}")
    for keys, problem in getattr(section, "relations", lambda: ())():
        places = sorted({(origins or {}).get(k, where) for k in keys} - {""})
        raise ConfigError(f"{_prefix(' and '.join(places), name)}{problem}")


def _prefix(where: str, section: str) -> str:
    return f"{where} [{section}]: " if where else f"[{section}]: "

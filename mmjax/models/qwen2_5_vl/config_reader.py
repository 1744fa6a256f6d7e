"""A typed reader for JSON config sections: every field checked against a dataclass's hints.

`Qwen25VLConfig.from_hf_dict` reads config.json through `Section`, so a wrong JSON type
(a list where an object belongs, "64" for an int, 64.5 for an int, a bool for an int)
raises an error naming the file and the field instead of failing deep inside.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A config field the port does not support or cannot read."""

_REQUIRED = object()


class _Mismatch(Exception):
    pass


def hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(hint, value):
    """value as the dataclass field type `hint` wants it (JSON lists -> tuples), or _Mismatch."""
    if hint is type(None):
        if value is None:
            return None
    elif isinstance(hint, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _convert(arg, value)
            except _Mismatch:
                pass
    elif typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (list, tuple)) and (args[-1] is Ellipsis or len(value) == len(args)):
            return tuple(_convert(args[0], x) for x in value)
    elif hint is bool or hint is str or hint is dict:
        if isinstance(value, hint):
            return value
    elif hint is int:  # JSON true/false are Python ints too; 64.0 is not an int
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    raise _Mismatch


def _describe(hint) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        count = "" if args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{_describe(args[0]).split(' ', 1)[1]}s"
    return {int: "an int", float: "a finite number", str: "a string", bool: "a bool (true/false)",
            dict: "an object", type(None): "null"}[hint]


def short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Section:
    """One JSON object of config.json; typed reads whose errors name the file and the field.

    With a parent (the 4.x layout's text fields live at the top level), a key missing here
    is looked up in the parent, and errors name it where it was found.
    """

    def __init__(self, source: str, obj: dict, prefix: str, parent: "Section | None" = None):
        self.source, self.obj, self.prefix, self.parent = source, obj, prefix, parent

    def _find(self, key: str):
        if key in self.obj:
            return self, self.obj[key]
        return self.parent._find(key) if self.parent is not None else (None, None)

    def get(self, key: str, hint, default=_REQUIRED):
        where, value = self._find(key)
        if where is None:
            if default is _REQUIRED:
                raise ConfigError(f"{self.source}: required field {self.prefix}{key} is missing")
            return default
        try:
            return _convert(hint, value)
        except _Mismatch:
            raise ConfigError(f"{self.source}: {where.prefix}{key} must be {_describe(hint)}, got "
                              f"{type(value).__name__} {short(value)}") from None

    def section(self, key: str, fallback: bool = False) -> "Section":
        """The object under `key` ({} when absent or null); fallback: look up misses here."""
        where, _ = self._find(key)
        obj = self.get(key, dict | None, None) or {}
        prefix = (where or self).prefix + key + "."
        return Section(self.source, obj, prefix, self if fallback else None)

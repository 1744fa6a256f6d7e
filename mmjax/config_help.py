"""What every config dataclass field carries as metadata: its one-line help (with its source)
and, for a field that takes names, the names it allows. And the one check of those names.

    loss_type: str = dataclasses.field(default="dapo", metadata=help_text(
        "grpo | bnpo | dapo | dr_grpo; TRL default dapo", choices=lambda: registry.names("loss_agg")))

`choices` is a collection, or a function returning one (evaluated only when a value is
checked, so a registry filled at import time is read when it is full). A field whose value
is a tuple (e.g. ScoreConfig.methods) has each element checked.

`choice_error` is the one place allowed values are checked: `mmjax.config_schema` calls it on
a recipe's ConfigDict before anything loads (mmjax.main), and a dataclass's `__post_init__`
calls `choice_errors(self)` for code that builds it directly. This module imports nothing, so
any layer may use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

HELP, CHOICES = "help", "choices"


def help_text(text: str, choices: Collection[Any] | Callable[[], Collection[Any]] | None = None) -> dict:
    """`dataclasses.field(metadata=help_text("... (TRL GRPOConfig)", choices=...))`; read back as
    field.metadata["help"] and field.metadata["choices"]."""
    return {HELP: text} if choices is None else {HELP: text, CHOICES: choices}


def allowed_values(choices: Collection[Any] | Callable[[], Collection[Any]] | None) -> tuple | None:
    """The allowed values, sorted (a callable is called); None when the field takes any value."""
    if choices is None:
        return None
    values = choices() if callable(choices) else choices
    return tuple(sorted(values, key=lambda v: (str(type(v)), str(v))))


def choice_error(name: str, value: Any, choices) -> str | None:
    """`"name='x': expected one of ('a', 'b')"` when `value` (or an element of a tuple / list value)
    is not allowed; None when it is, or when the field has no choices."""
    allowed = allowed_values(choices)
    if allowed is None:
        return None
    if isinstance(value, (tuple, list)):
        bad = [v for v in value if not _is_in(v, allowed)]
        return f"{name}={value!r}: {bad[0]!r} is not one of {allowed}" if bad else None
    return None if _is_in(value, allowed) else f"{name}={value!r}: expected one of {allowed}"


def choice_errors(obj) -> list[str]:
    """choice_error of every field of dataclass instance `obj` that declares choices."""
    errors = []
    for field in dataclasses.fields(obj):
        if CHOICES in field.metadata:
            error = choice_error(field.name, getattr(obj, field.name), field.metadata[CHOICES])
            if error:
                errors.append(error)
    return errors


def _is_in(value, allowed: tuple) -> bool:
    # True == 1 and "1" != 1: compare type and value, so `scale_rewards=True` is not 'group'.
    return any(type(value) is type(a) and value == a for a in allowed)

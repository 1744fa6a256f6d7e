"""`{run}` inside an override's string: that run's workdir, and a dependency on that run.

A sweep names an earlier run's output before the run exists: `init_from="{sft_mid}"`,
`data.selection.score_file="{score}/scores.parquet"`. The command line gets the real path
(W/runs/<run>), and the run waits for the run it names, so the dependency cannot be forgotten.
Placeholders are str.format fields holding a run name only (no `!r`, no `:spec`); `{{` and `}}`
are literal braces. Strings inside tuples, lists and dicts are read too.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

from mmjax.sweep.spec import SweepError

_FORMAT = string.Formatter()


def _fields(text: str) -> list[tuple[str, str | None]]:
    """(literal text, run name or None) pieces of `text`."""
    try:
        parsed = list(_FORMAT.parse(text))
    except ValueError as e:  # a lone { or }
        raise SweepError(f"{text!r}: {e} (write {{{{ or }}}} for a literal brace)") from None
    pieces = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (not field or spec or conversion):
            raise SweepError(f"{text!r}: a placeholder is {{run_name}}, got "
                             f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}")
        pieces.append((literal, field))
    return pieces


def _walk(value: Any, on_text: Callable[[str], Any]) -> Any:
    if isinstance(value, str):
        return on_text(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_walk(v, on_text) for v in value)
    if isinstance(value, dict):
        return {k: _walk(v, on_text) for k, v in value.items()}
    return value


def names_in(value: Any) -> list[str]:
    """The run names `value`'s placeholders refer to, in order, each once."""
    found: list[str] = []
    _walk(value, lambda text: found.extend(f for _, f in _fields(text) if f is not None and f not in found))
    return found


def resolve(value: Any, workdir_of: Callable[[str], str]) -> Any:
    """`value` with each `{run}` replaced by `workdir_of(run)` and `{{` / `}}` by single braces."""
    return _walk(value, lambda text: "".join(
        literal + (workdir_of(field) if field is not None else "") for literal, field in _fields(text)))

"""Reading labelled boxes [x1, y1, x2, y2] from model text or dataset targets.

Accepted forms, in order of trial:

1. the text (code fences such as ```json removed) as JSON, then as a Python literal:
   a list of ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` objects (Qwen2.5-VL's
   grounding output; ``"bbox"`` is read too), one such object, one bare
   ``[x1, y1, x2, y2]``, or a list of bare boxes (mixed lists are fine);
2. if that gives no box (e.g. truncated or chatty output): every flat ``{...}`` object
   holding a ``"bbox_2d"`` list of four numbers (with its ``"label"`` if any), else
   every bare ``[n, n, n, n]`` in the text.

A box is kept only if its four coordinates are finite numbers within +-1e9 with
x2 > x1 and y2 > y1; others are dropped (they cannot overlap anything). Labels are
compared case-folded and stripped; a box without a label has label None.
"""

from __future__ import annotations

import ast
import json
import numbers
import re
import warnings
from typing import Any, NamedTuple

_MAX_COORD = 1e9  # keeps areas and their sums far from float overflow
_FENCE = re.compile(r"```[A-Za-z0-9_-]*")
# No nested quantifier over digits: long digit runs must not backtrack quadratically.
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BARE = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_OBJECT = re.compile(r"\{[^{}]*\}")
_BBOX_FIELD = re.compile(rf"""["']bbox(?:_2d)?["']\s*:\s*\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]""")
_LABEL_FIELD = re.compile(r"""["']label["']\s*:\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")


class Box(NamedTuple):
    label: str | None
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def area(self) -> float:
        return (self.x2 - self.x1) * (self.y2 - self.y1)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two valid boxes (continuous coordinates, no +1)."""
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return min(1.0, inter / (a.area + b.area - inter))


def _coord(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        v = float(value)
    except (OverflowError, ValueError):
        return None
    return v if abs(v) <= _MAX_COORD else None  # also rejects nan


def make_box(coords: Any, label: Any = None) -> Box | None:
    """A valid Box from four numbers and an optional label, or None."""
    if isinstance(coords, (str, bytes, dict)) or not hasattr(coords, "__len__") or len(coords) != 4:
        return None
    values = [_coord(v) for v in coords]
    if any(v is None for v in values):
        return None
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        return None
    name = None if label is None else str(label).strip().casefold()
    return Box(name, x1, y1, x2, y2)


def _is_bare(item: Any) -> bool:
    return isinstance(item, (list, tuple)) and len(item) == 4 and all(_coord(v) is not None for v in item)


def boxes_from_object(obj: Any) -> list[Box]:
    """Boxes from already-parsed data (see module doc, form 1)."""
    if isinstance(obj, dict) or _is_bare(obj):
        obj = [obj]
    if not isinstance(obj, (list, tuple)):
        return []
    found = []
    for item in obj:
        if isinstance(item, dict):
            coords = item.get("bbox_2d", item.get("bbox"))
            box = make_box(coords, item.get("label"))
        else:
            box = make_box(item)
        if box is not None:
            found.append(box)
    return found


def _boxes_from_regex(text: str) -> list[Box]:
    found = []
    for obj in _OBJECT.finditer(text):
        coords = _BBOX_FIELD.search(obj.group(0))
        if coords is None:
            continue
        label = _LABEL_FIELD.search(obj.group(0))
        name = None if label is None else (label.group(1) if label.group(1) is not None else label.group(2))
        box = make_box([float(v) for v in coords.groups()], name)
        if box is not None:
            found.append(box)
    if found:
        return found
    bare = (make_box([float(v) for v in m.groups()]) for m in _BARE.finditer(text))
    return [box for box in bare if box is not None]


def _python_literal(text: str):
    """ast.literal_eval without its SyntaxWarnings: a completion like "[1if 2]" is a model's text,
    not our code, and a warning per parsed answer would flood a training log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return ast.literal_eval(text)


def parse_boxes(text: str) -> list[Box]:
    """Boxes from free text (see module doc)."""
    body = _FENCE.sub("", text).strip()
    for load in (json.loads, _python_literal):
        try:
            found = boxes_from_object(load(body))
        except Exception:  # noqa: BLE001 - any parse failure (incl. deep nesting) means "not this form"
            continue
        if found:
            return found
    return _boxes_from_regex(body)

"""Tiered Visual Jigsaw reward (SPEC 1.5).

Default = paper: format 0.2 (and total 0 when the format is wrong); accuracy 1 if the
parsed order equals the target, ``gamma * (#correct positions / K)`` if it is a valid
permutation of 1..K (length K, each of 1..K once), else 0; total = format + accuracy.

Options from the released code (``JIGSAW_PRESETS["code"]``): ``container="boxed"``,
partial credit only when K >= ``partial_min_pieces`` (5, i.e. K > 4), and a repetition
penalty of -0.5 added when a 7+ word line repeats consecutively more than 3 times
(never applied when the format is wrong, whose total stays 0). ``think=False`` is the
released "no-think" variant: the whole completion is the bare answer, format reward 0.

The released code gives partial credit to any answer with K distinct integers; mmjax
follows the SPEC and requires a permutation of 1..K. A target that is not a permutation
of 1..K is a data error (``BadTarget``: 0.0 and a warning). Range:
[min(0, repetition_penalty), format_score + 1]. ``jigsaw_exact`` is the solve rate (0/1).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from mmjax.rewards import parsing, registry
from mmjax.rewards.repetition import has_repetition

# Comma-separated ASCII integers, whitespace allowed around each; nothing else.
_ORDER = re.compile(r"\s*[0-9]+\s*(?:,\s*[0-9]+\s*)*")
_MAX_DIGITS = 12  # longer numbers cannot be piece indices; avoids huge int parsing

JIGSAW_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "code": {"container": parsing.BOXED, "partial_min_pieces": 5, "repetition_penalty": -0.5},
}


class JigsawScore(NamedTuple):
    format: float
    accuracy: float
    penalty: float
    exact: bool

    @property
    def total(self) -> float:
        return self.format + self.accuracy + self.penalty


def parse_order(text: str) -> list[int] | None:
    """``"3, 1,2"`` -> ``[3, 1, 2]``; None unless the text is only comma-separated integers."""
    if _ORDER.fullmatch(text) is None:
        return None
    items = [item.strip().lstrip("0") or "0" for item in text.split(",")]
    if any(len(item) > _MAX_DIGITS for item in items):
        return None
    return [int(item) for item in items]


def parse_target_order(target: Any) -> list[int]:
    """A permutation of 1..K from a list/tuple/array of ints or a string ``"3,1,2"`` / ``"[3, 1, 2]"``."""
    order = _target_ints(target)
    if not order or not is_permutation(order, len(order)):
        raise registry.BadTarget(f"jigsaw target {order[:20]} is not a permutation of 1..{len(order)}")
    return order


def _target_ints(target: Any) -> list[int]:
    if isinstance(target, str):
        order = parse_order(target)
        if order is not None:
            return order
        try:
            target = json.loads(target)
        except (ValueError, RecursionError):
            raise registry.BadTarget(f"jigsaw target {target[:80]!r} is not comma-separated integers") from None
    if isinstance(target, (str, bytes, dict)):
        raise registry.BadTarget(f"jigsaw target must be a sequence of ints, got {type(target).__name__}")
    try:
        items = list(target)
    except TypeError:
        raise registry.BadTarget(f"jigsaw target must be a sequence of ints, got {type(target).__name__}") from None
    order = []
    for item in items:
        try:
            if isinstance(item, bool):
                raise TypeError
            order.append(operator.index(item))
        except TypeError:
            raise registry.BadTarget(f"jigsaw target item {item!r} is not an int") from None
    return order


def is_permutation(order: Sequence[int], k: int) -> bool:
    """True if ``order`` holds each of 1..k exactly once."""
    return len(order) == k and sorted(order) == list(range(1, k + 1))


def jigsaw_score(
    text: str,
    target: Any,
    *,
    container: str = parsing.ANSWER,
    gamma: float = 0.2,
    format_score: float = 0.2,
    partial_min_pieces: int = 0,
    repetition_penalty: float = 0.0,
    repetition_min_words: int = 7,
    repetition_max_run: int = 3,
    think: bool = True,
) -> JigsawScore:
    """The reward of one completion, split into its parts (see module doc)."""
    goal = parse_target_order(target)
    if think:
        if not parsing.think_format_ok(text, container):
            return JigsawScore(0.0, 0.0, 0.0, False)
        answer = parsing.extract_answer(text, container) or ""
        fmt = format_score
    else:
        answer, fmt = text.strip(), 0.0
    penalty = repetition_penalty if repetition_penalty and has_repetition(
        text, repetition_min_words, repetition_max_run) else 0.0
    order = parse_order(answer)
    k = len(goal)
    if order == goal:
        return JigsawScore(fmt, 1.0, penalty, True)
    accuracy = 0.0
    if order is not None and k >= partial_min_pieces and is_permutation(order, k):
        accuracy = gamma * sum(o == g for o, g in zip(order, goal)) / k
    return JigsawScore(fmt, accuracy, penalty, False)


@registry.register("jigsaw")
def jigsaw_reward(
    completions: Sequence[str],
    targets: Sequence[Any],
    *,
    container: str = parsing.ANSWER,
    gamma: float = 0.2,
    format_score: float = 0.2,
    partial_min_pieces: int = 0,
    repetition_penalty: float = 0.0,
    repetition_min_words: int = 7,
    repetition_max_run: int = 3,
    think: bool = True,
    **kwargs: Any,
) -> list[float]:
    """Total jigsaw reward per completion; targets are orders (``target[i]`` = shown index of piece i)."""
    parsing.check_container(container)
    opts = dict(
        container=container, gamma=gamma, format_score=format_score, partial_min_pieces=partial_min_pieces,
        repetition_penalty=repetition_penalty, repetition_min_words=repetition_min_words,
        repetition_max_run=repetition_max_run, think=think,
    )
    return registry.score_rows("jigsaw", lambda text, target: jigsaw_score(text, target, **opts).total,
                               completions, targets)


@registry.register("jigsaw_exact")
def jigsaw_exact_reward(
    completions: Sequence[str],
    targets: Sequence[Any],
    *,
    container: str = parsing.ANSWER,
    think: bool = True,
    **kwargs: Any,
) -> list[float]:
    """1.0 if the format holds and the order is exactly right, else 0.0: the solve rate to log.

    Give it weight 0 in ``combine`` to log it without changing the training reward.
    """
    parsing.check_container(container)
    return registry.score_rows(
        "jigsaw_exact", lambda text, target: float(jigsaw_score(text, target, container=container, think=think).exact),
        completions, targets)

"""Tiered Visual Jigsaw reward (SPEC 1.5).

Default = paper: format 0.2 (and total 0 when the format is wrong); accuracy 1 if the
parsed order equals the target, ``gamma * (#correct positions / K)`` if it is a valid
permutation of 1..K (length K, each of 1..K once), else 0; total = format + accuracy.
``JIGSAW_PRESETS["code"]`` is the released code's ``compute_score``: ``\\boxed{}``
answers read exactly as released (``parser="released"``), partial credit only for K > 4,
and a -0.5 repetition penalty. Each option is described on ``JigsawOptions``.

Where the released code is wrong (SPEC 4), mmjax does not follow it, in either preset:
the released code gives partial credit to any answer with K distinct integers (numbers
outside 1..K included); mmjax requires a permutation of 1..K. The other remaining
differences from the released ``compute_score``: a target that is not a permutation of
1..K is a data error (``BadTarget``: 0.0 and a warning) where the released code compares
whatever it was given, and the reward returns the total (``jigsaw_score`` gives the parts)
instead of a dict. Range: [min(0, repetition_penalty), format_score + 1].
``jigsaw_exact`` is the solve rate (0/1).
"""

from __future__ import annotations

import dataclasses
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

MMJAX, RELEASED = "mmjax", "released"
PARSERS = (MMJAX, RELEASED)



@dataclasses.dataclass(frozen=True)
class JigsawOptions:
    """The jigsaw reward's options; the defaults are the paper's reward (scoring: module doc).

    The code preset (``JIGSAW_PRESETS["code"]``, the released ``compute_score``) sets
    ``container="boxed"``; ``partial_min_pieces=5``: partial credit only when K >= 5, i.e.
    K > 4; ``repetition_penalty=-0.5``, added when a line of ``repetition_min_words`` (7)+
    words repeats consecutively more than ``repetition_max_run`` (3) times (never applied
    when the format is wrong, whose total stays 0; lines compared with ``str.lower``, see
    ``mmjax.rewards.repetition``); and ``parser="released"``.

    ``parser="mmjax"`` (the paper preset) reads completions with mmjax's rule:
    ``parsing.think_format_ok`` and ``parsing.extract_answer``. ``parser="released"``
    (needs ``container="boxed"``) reads a completion exactly as the released code does:

    - format (``released_format_ok``): the raw text, not stripped, starts with ``<think>``
      and has a later ``</think>``, then a later ``\\boxed{``, then a later ``}``. Braces need
      not balance and the box may sit before a later ``</think>``. Leading whitespace fails
      the check, as in the released code, which gets the decoded response unstripped; mmjax
      keeps that rather than guess at a tokenizer's spacing;
    - answer (``released_boxed_answer``): the content of the LAST ``\\boxed{``, read by plain
      depth counting (``\\{`` and ``\\}`` count as braces), stripped; an unclosed last box
      reads as ``"None"`` (no order, accuracy 0, the format reward still 0.2);
    - order (``released_order``): the answer split at commas, each piece read by
      ``int(piece.strip())`` (so ``+1`` and non-ASCII digits count, as in Python); any
      unreadable piece gives no order.

    ``think=False`` is the released "no-think" variant: the whole completion is the bare
    answer, format reward 0 (read with ``int()`` per piece under ``parser="released"``).
    """

    container: str = parsing.ANSWER
    gamma: float = 0.2  # partial credit: gamma * (#correct positions / K)
    format_score: float = 0.2
    partial_min_pieces: int = 0  # partial credit only when K >= this
    repetition_penalty: float = 0.0
    repetition_min_words: int = 7
    repetition_max_run: int = 3
    think: bool = True  # False: the completion is the bare answer, format reward 0
    parser: str = MMJAX

    def check(self) -> JigsawOptions:
        """self, once container and parser are known and fit together (ValueError otherwise)."""
        check_parser(self.parser, parsing.check_container(self.container))
        return self


_DEFAULTS = JigsawOptions()

# Keyword overrides of the defaults, as `rewards.get("jigsaw", **JIGSAW_PRESETS[name])` takes them.
JIGSAW_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "code": {"container": parsing.BOXED, "partial_min_pieces": 5, "repetition_penalty": -0.5,
             "parser": RELEASED},
}

_THINK_OPEN, _THINK_CLOSE, _BOX_OPEN = "<think>", "</think>", "\\boxed{"
_BRACE = re.compile(r"[{}]")
# What the released answer extraction returns when the last box never closes.
RELEASED_NO_ANSWER = "None"


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


def released_format_ok(text: str) -> bool:
    """The released check ``<think>.*</think>.*\\boxed{.*}.*`` (DOTALL, full match) on the raw text.

    Each marker is looked up after the previous one ends; taking the first occurrence of
    each is enough (an earlier one leaves the most room for the next), so this is linear
    where the backtracking pattern is not.
    """
    if not text.startswith(_THINK_OPEN):
        return False
    close = text.find(_THINK_CLOSE, len(_THINK_OPEN))
    if close < 0:
        return False
    box = text.find(_BOX_OPEN, close + len(_THINK_CLOSE))
    return box >= 0 and text.find("}", box + len(_BOX_OPEN)) >= 0


def released_boxed_answer(text: str) -> str:
    """The released extraction: the last ``\\boxed{``'s content by plain depth counting, stripped.

    ``"None"`` when there is no box or the last one never closes (no fallback to an
    earlier box; escaped braces are braces).
    """
    start = text.rfind(_BOX_OPEN)
    if start < 0:
        return RELEASED_NO_ANSWER
    begin, depth = start + len(_BOX_OPEN), 0
    for m in _BRACE.finditer(text, begin):
        depth += 1 if m.group() == "{" else -1
        if depth < 0:
            return text[begin:m.start()].strip()
    return RELEASED_NO_ANSWER


def released_order(text: str) -> list[int] | None:
    """``int(piece.strip())`` for each comma-separated piece, as released; None if any fails."""
    try:
        return [int(piece.strip()) for piece in text.split(",")]
    except ValueError:  # also numbers past Python's int string-length limit
        return None


def check_parser(parser: str, container: str) -> str:
    if parser not in PARSERS:
        raise ValueError(f"jigsaw parser must be one of {PARSERS}; got {parser!r}")
    if parser == RELEASED and container != parsing.BOXED:
        raise ValueError(f"jigsaw parser {RELEASED!r} is the released \\boxed{{}} reading; it needs "
                         f"container={parsing.BOXED!r}, got {container!r}")
    return parser


def _read(text: str, container: str, think: bool, parser: str) -> tuple[bool, list[int] | None]:
    """(format ok, parsed order) under the chosen reading; think=False has no format to check."""
    if parser == RELEASED:
        if not think:
            return True, released_order(text)
        if not released_format_ok(text):
            return False, None
        return True, released_order(released_boxed_answer(text))
    if not think:
        return True, parse_order(text.strip())
    if not parsing.think_format_ok(text, container):
        return False, None
    return True, parse_order(parsing.extract_answer(text, container) or "")


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


def jigsaw_score(text: str, target: Any, options: JigsawOptions = _DEFAULTS, **overrides: Any) -> JigsawScore:
    """The reward of one completion, split into its parts (see module doc).

    overrides: JigsawOptions fields that replace those of `options` (e.g. ``think=False``).
    """
    opt = dataclasses.replace(options, **overrides) if overrides else options
    goal = parse_target_order(target)
    format_ok, order = _read(text, opt.container, opt.think, opt.parser)
    if not format_ok:
        return JigsawScore(0.0, 0.0, 0.0, False)
    fmt = opt.format_score if opt.think else 0.0
    penalty = opt.repetition_penalty if opt.repetition_penalty and has_repetition(
        text, opt.repetition_min_words, opt.repetition_max_run) else 0.0
    k = len(goal)
    if order == goal:
        return JigsawScore(fmt, 1.0, penalty, True)
    accuracy = 0.0
    if order is not None and k >= opt.partial_min_pieces and is_permutation(order, k):
        accuracy = opt.gamma * sum(o == g for o, g in zip(order, goal)) / k
    return JigsawScore(fmt, accuracy, penalty, False)


@registry.register("jigsaw", options=JigsawOptions)
def jigsaw_reward(completions: Sequence[str], targets: Sequence[Any], **kwargs: Any) -> list[float]:
    """Total jigsaw reward per completion; targets are orders (``target[i]`` = shown index of piece i).

    kwargs: JigsawOptions fields; any other keyword (a dataset column) is ignored.
    """
    opts = registry.pick_options(JigsawOptions, kwargs).check()
    return registry.score_rows("jigsaw", lambda text, target: jigsaw_score(text, target, opts).total,
                               completions, targets)


@registry.register("jigsaw_exact")
def jigsaw_exact_reward(
    completions: Sequence[str],
    targets: Sequence[Any],
    *,
    container: str = _DEFAULTS.container,
    think: bool = _DEFAULTS.think,
    parser: str = _DEFAULTS.parser,
    **kwargs: Any,
) -> list[float]:  # only the options that say how an answer is read: a solve has no weights
    """1.0 if the format holds and the order is exactly right, else 0.0: the solve rate to log.

    Give it weight 0 in ``combine`` to log it without changing the training reward. With
    ``parser="released"`` it is the released ``acc``.
    """
    opts = JigsawOptions(container=container, think=think, parser=parser).check()
    return registry.score_rows(
        "jigsaw_exact", lambda text, target: float(jigsaw_score(text, target, opts).exact),
        completions, targets)

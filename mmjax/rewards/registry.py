"""Registry of reward functions on decoded text.

A reward function is batched and TRL-like::

    fn(completions: Sequence[str], targets: Sequence[Any] | None, **kwargs) -> list[float]

Keyword-only parameters with defaults are its options (bound with ``get(name, **opts)``),
or, for a reward registered with ``options=`` a frozen dataclass, that dataclass's fields
(the function takes them in ``**kwargs`` and reads them with ``pick_options``); any other
keyword (e.g. dataset columns passed along by the learner) is ignored.

Every registered reward is total: whatever the text and the target, each row gets a
finite float. Rows are scored one by one through ``score_rows``, which turns an
unexpected exception or a non-finite value into 0.0 and logs it with the row index and
the reward's name, so a bug is never silent but never stops training either. A target
the reward cannot read (``BadTarget``: a data problem) also scores 0.0, with a warning.

Metrics channel: besides its values, a reward may count events of a call for the
training loop to log, with ``record_metric("<reward>/<what>", n)`` (e.g.
``accuracy_math/math_timeouts``: rows whose math check ran out of time). Counts of the
same name add up. ``combine`` returns the counts recorded during its call in
``RewardOutput.metrics``; counts recorded outside ``combine`` (a reward called directly)
wait, process-wide, for ``pop_metrics()``, which returns and clears them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list[float]]
T = TypeVar("T")


class BadTarget(ValueError):
    """A target a reward cannot read: a data problem, scored 0.0 and logged per row."""


_REGISTRY: dict[str, RewardFn] = {}
_OPTIONS: dict[str, type] = {}  # name -> options dataclass, for rewards registered with one


def register(name: str, options: type | None = None) -> Callable[[RewardFn], RewardFn]:
    """Decorator registering a batched reward function under ``name``.

    options: a dataclass whose fields (and defaults) are the reward's options, for a function
    that takes them as ``**kwargs`` rather than writing each one in its signature.
    """

    def decorator(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"reward {name!r} is already registered ({_REGISTRY[name].__qualname__})")
        _REGISTRY[name] = fn
        if options is not None:
            _OPTIONS[name] = options
        return fn

    return decorator


def names() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(_REGISTRY)


def options(name: str) -> dict[str, Any]:
    """The options of reward ``name`` with their defaults."""
    fn = _lookup(name)
    if name in _OPTIONS:
        return {f.name: f.default for f in dataclasses.fields(_OPTIONS[name])}
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def get(name: str, **opts: Any) -> RewardFn:
    """Reward ``name`` with ``opts`` bound; unknown options raise TypeError."""
    fn = _lookup(name)
    unknown = sorted(set(opts) - set(options(name)))
    if unknown:
        raise TypeError(f"reward {name!r} has no option(s) {unknown}; its options are {sorted(options(name))}")
    return functools.partial(fn, **opts) if opts else fn


def pick_options(cls: type[T], keywords: Mapping[str, Any]) -> T:
    """``cls`` (an options dataclass) from those of ``keywords`` that are its fields; the others
    (dataset columns a reward is also called with) are left out."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in keywords.items() if k in fields})


def _lookup(name: str) -> RewardFn:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; registered: {names()}") from None


def broadcast_column(value: Any, n: int, column: str) -> list[Any]:
    """A per-row column: a sequence of length ``n`` as is, any scalar repeated ``n`` times."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) != n:
            raise ValueError(f"column {column!r} has {len(value)} rows, completions have {n}")
        return list(value)
    return [value] * n


def score_rows(
    name: str,
    score: Callable[..., float],
    completions: Sequence[str],
    targets: Sequence[Any] | None,
    **columns: Any,
) -> list[float]:
    """``[score(completion_i, target_i, **{col: columns[col][i]}) for i]``, made total.

    ``targets=None`` means the reward needs none (e.g. format). Mismatched batch lengths
    are a caller bug and raise ValueError; everything about a row's content is handled.
    """
    n = len(completions)
    if targets is None:
        targets = [None] * n
    elif len(targets) != n:
        raise ValueError(f"reward {name!r}: {n} completions but {len(targets)} targets")
    per_row = {col: broadcast_column(v, n, col) for col, v in columns.items()}
    out = []
    for i, (completion, target) in enumerate(zip(completions, targets)):
        if not isinstance(completion, str):
            logger.warning("reward %r: row %d completion is %s, not str; scored as ''", name, i, type(completion).__name__)
            completion = ""
        try:
            value = float(score(completion, target, **{col: v[i] for col, v in per_row.items()}))
        except BadTarget as e:
            logger.warning("reward %r: row %d has a bad target (%s); scored 0.0", name, i, e)
            value = 0.0
        except Exception:  # noqa: BLE001 - a reward must never stop training; logged, not hidden
            logger.exception("reward %r failed on row %d; scored 0.0", name, i)
            value = 0.0
        if not math.isfinite(value):
            logger.error("reward %r gave %r on row %d; scored 0.0", name, value, i)
            value = 0.0
        out.append(value)
    return out


_pending_metrics: dict[str, float] = {}
_pending_lock = threading.Lock()
_collector = threading.local()  # .metrics: the dict of the innermost collecting_metrics() here


def record_metric(name: str, value: float) -> None:
    """Adds ``value`` to metric ``name`` (see module doc: where it ends up)."""
    target = getattr(_collector, "metrics", None)
    if target is not None:
        target[name] = target.get(name, 0) + value
        return
    with _pending_lock:
        _pending_metrics[name] = _pending_metrics.get(name, 0) + value


def pop_metrics() -> dict[str, float]:
    """The metrics recorded outside ``collecting_metrics`` since the last pop, then cleared."""
    with _pending_lock:
        popped = dict(_pending_metrics)
        _pending_metrics.clear()
    return popped


@contextlib.contextmanager
def collecting_metrics() -> Iterator[dict[str, float]]:
    """Metrics this thread records inside the block go to the yielded dict (and, when
    blocks nest, to the enclosing block's dict too once this one ends)."""
    outer = getattr(_collector, "metrics", None)
    mine: dict[str, float] = {}
    _collector.metrics = mine
    try:
        yield mine
    finally:
        _collector.metrics = outer
        if outer is not None:
            for name, value in mine.items():
                outer[name] = outer.get(name, 0) + value

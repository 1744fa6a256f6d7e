"""One accuracy reward for mixed data: each row names its task (SPEC 2.3).

The difficulty-sampling data mixes math, multiple choice, OCR, counting and grounding
under a single accuracy reward; the row's ``task`` column picks the checker. Math rows
go to math-verify together, in parallel and time-bounded, as in ``accuracy_math``; their
timeouts are counted in the metric ``accuracy/math_timeouts``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mmjax.rewards import parsing, registry
from mmjax.rewards.choice import choice_score
from mmjax.rewards.counting import count_score
from mmjax.rewards.grounding import grounding_score
from mmjax.rewards.math_answer import MathRows, math_score
from mmjax.rewards.math_check import MathBudget
from mmjax.rewards.ocr import ocr_score

_MATH_DEFAULT = MathBudget()

TASK_SCORERS: dict[str, Callable[..., float]] = {
    "math": math_score,
    "choice": choice_score,
    "ocr": ocr_score,
    "count": count_score,
    "grounding": grounding_score,
}


def _score_task(text: str, target: Any, task: Any, container: str) -> float:
    scorer = TASK_SCORERS.get(task) if isinstance(task, str) else None
    if scorer is None:
        raise registry.BadTarget(f"unknown task {task!r}; expected one of {sorted(TASK_SCORERS)}")
    return scorer(text, target, container=container)


@registry.register("accuracy")
def accuracy_reward(
    completions: Sequence[str],
    targets: Sequence[Any],
    *,
    container: str = parsing.ANSWER,
    task: Sequence[str] | str | None = None,
    math_timeout_seconds: float = _MATH_DEFAULT.row_seconds,
    math_batch_timeout_seconds: float | None = _MATH_DEFAULT.batch_seconds,
    math_workers: int = _MATH_DEFAULT.workers,
    **kwargs: Any,
) -> list[float]:
    """Range [0, 1]; ``task`` is a per-row column (or one name for all rows) from ``TASK_SCORERS``.

    Math rows are checked together at the end, as in ``accuracy_math`` (``math_*``
    options: its ``timeout_seconds``, ``batch_timeout_seconds``, ``workers``).
    """
    parsing.check_container(container)
    if task is None:
        raise ValueError(f"reward 'accuracy' needs a task column (one of {sorted(TASK_SCORERS)} per row)")
    budget = MathBudget(row_seconds=math_timeout_seconds, batch_seconds=math_batch_timeout_seconds,
                        workers=math_workers)
    math_rows = MathRows("accuracy", budget, container=container)

    def score(text: str, target: Any, task: Any, row: int) -> float:
        if isinstance(task, str) and task == "math":
            return math_rows.score(text, target, row)
        return _score_task(text, target, task, container)

    scores = registry.score_rows("accuracy", score, completions, targets, task=task, row=range(len(completions)))
    return math_rows.finish(scores)

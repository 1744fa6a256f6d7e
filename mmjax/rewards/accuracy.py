"""One accuracy reward for mixed data: each row names its task (SPEC 2.3).

The difficulty-sampling data mixes math, multiple choice, OCR, counting and grounding
under a single accuracy reward; the row's ``task`` column picks the checker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mmjax.rewards import parsing, registry
from mmjax.rewards.choice import choice_score
from mmjax.rewards.counting import count_score
from mmjax.rewards.grounding import grounding_score
from mmjax.rewards.math_answer import math_score
from mmjax.rewards.ocr import ocr_score

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
    **kwargs: Any,
) -> list[float]:
    """Range [0, 1]; ``task`` is a per-row column (or one name for all rows) from ``TASK_SCORERS``."""
    parsing.check_container(container)
    if task is None:
        raise ValueError(f"reward 'accuracy' needs a task column (one of {sorted(TASK_SCORERS)} per row)")
    return registry.score_rows(
        "accuracy", lambda text, target, task: _score_task(text, target, task, container), completions, targets,
        task=task)

"""Math accuracy (SPEC 2.3): math-verify on the container content, exact-string fallback.

The answer is the container content, or the whole completion when there is no
container (as the released difficulty-sampling reward does). A target is read the same
way, so ``"<answer>3/4</answer>"`` and ``"3/4"`` are the same target. Reward 1.0 if
math-verify finds the two equal or the stripped strings are identical, else 0.0.
Answers longer than ``max_chars`` only get the string comparison: sympy work on long
inputs is where timeouts happen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmjax.rewards import parsing, registry
from mmjax.rewards.math_check import math_equal
from mmjax.rewards.targets import target_text


def math_score(text: str, target: Any, *, container: str = parsing.ANSWER, timeout_seconds: int = 5,
               max_chars: int = 1000) -> float:
    gold = target_text(target, container)
    pred = parsing.answer_or_text(text, container)
    if pred == gold:
        return 1.0
    if not pred or not gold or len(pred) > max_chars or len(gold) > max_chars:
        return 0.0
    return float(math_equal(pred, gold, timeout_seconds))


@registry.register("accuracy_math")
def math_reward(
    completions: Sequence[str],
    targets: Sequence[Any],
    *,
    container: str = parsing.ANSWER,
    timeout_seconds: int = 5,
    max_chars: int = 1000,
    **kwargs: Any,
) -> list[float]:
    """Range {0, 1}. ``timeout_seconds`` bounds each math-verify step (see ``math_check``)."""
    parsing.check_container(container)
    return registry.score_rows(
        "accuracy_math",
        lambda text, target: math_score(text, target, container=container, timeout_seconds=timeout_seconds,
                                        max_chars=max_chars),
        completions, targets)

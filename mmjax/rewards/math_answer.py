"""Math accuracy (SPEC 2.3): math-verify on the container content, exact-string fallback.

The answer is the container content, or the whole completion when there is no
container (as the released difficulty-sampling reward does). A target is read the same
way, so ``"<answer>3/4</answer>"`` and ``"3/4"`` are the same target. Reward 1.0 if
the stripped strings are identical or math-verify finds the two equal, else 0.0.
Answers longer than ``max_chars`` only get the string comparison: sympy work on long
inputs is where timeouts happen.

The rows that need math-verify are checked together, in parallel worker processes,
each within ``timeout_seconds`` and the batch within ``batch_timeout_seconds`` (see
``math_check.MathBudget`` for the defaults and where they come from). A row that runs
out of time scores 0.0 and is counted in the metric ``accuracy_math/math_timeouts``
(``math_checks`` counts the rows sent to math-verify); see ``registry.record_metric``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mmjax.rewards import parsing, registry
from mmjax.rewards.math_check import MathBudget, check_batch
from mmjax.rewards.targets import target_text

logger = logging.getLogger(__name__)

_DEFAULT = MathBudget()


def math_pair(text: str, target: Any, *, container: str = parsing.ANSWER,
              max_chars: int = 1000) -> float | tuple[str, str]:
    """The score if the strings decide it (1.0 equal, 0.0 empty or too long), else ``(pred, gold)`` to check."""
    gold = target_text(target, container)
    pred = parsing.answer_or_text(text, container)
    if pred == gold:
        return 1.0
    if not pred or not gold or len(pred) > max_chars or len(gold) > max_chars:
        return 0.0
    return pred, gold


class MathRows:
    """A batch's math rows: cheap string checks row by row, then one parallel math-verify batch.

    ``score`` goes through ``registry.score_rows`` (with a ``row`` column) and returns a
    provisional 0.0 for rows it queues; ``finish`` checks the queue and fills them in.
    """

    def __init__(self, reward: str, budget: MathBudget, *, container: str, max_chars: int = 1000):
        self.reward, self.budget, self.container, self.max_chars = reward, budget, container, max_chars
        self.queued: dict[int, tuple[str, str]] = {}

    def score(self, text: str, target: Any, row: int) -> float:
        decided = math_pair(text, target, container=self.container, max_chars=self.max_chars)
        if isinstance(decided, tuple):
            self.queued[row] = decided
            return 0.0
        return decided

    def finish(self, scores: list[float]) -> list[float]:
        rows = sorted(self.queued)
        try:
            verdicts = check_batch([self.queued[row] for row in rows], self.budget)
        except Exception:  # noqa: BLE001 - a reward must never stop training; logged, not hidden
            logger.exception("reward %r: math-verify batch of %d rows failed; they score 0.0", self.reward, len(rows))
            verdicts = [False] * len(rows)
        for row, equal in zip(rows, verdicts):
            scores[row] = 1.0 if equal else 0.0
        timeouts = sum(equal is None for equal in verdicts)
        if timeouts:
            logger.info("reward %r: %d of %d math-verify checks ran out of time (%.2f s each); scored 0.0",
                        self.reward, timeouts, len(rows), self.budget.row_seconds)
        registry.record_metric(f"{self.reward}/math_timeouts", timeouts)
        registry.record_metric(f"{self.reward}/math_checks", len(rows))
        return scores


def math_score(text: str, target: Any, *, container: str = parsing.ANSWER,
               timeout_seconds: float = _DEFAULT.row_seconds, max_chars: int = 1000) -> float:
    """One row; a batch goes faster through ``accuracy_math`` (checked in parallel)."""
    decided = math_pair(text, target, container=container, max_chars=max_chars)
    if isinstance(decided, float):
        return decided
    return float(check_batch([decided], MathBudget(row_seconds=timeout_seconds))[0] is True)


@registry.register("accuracy_math")
def math_reward(
    completions: Sequence[str],
    targets: Sequence[Any],
    *,
    container: str = parsing.ANSWER,
    timeout_seconds: float = _DEFAULT.row_seconds,
    batch_timeout_seconds: float | None = _DEFAULT.batch_seconds,
    workers: int = _DEFAULT.workers,
    max_chars: int = 1000,
    **kwargs: Any,
) -> list[float]:
    """Range {0, 1}. ``timeout_seconds``, ``batch_timeout_seconds``, ``workers``: the
    ``MathBudget`` of the batch's math-verify checks (one row's whole check, the whole
    batch, parallel worker processes)."""
    parsing.check_container(container)
    budget = MathBudget(row_seconds=timeout_seconds, batch_seconds=batch_timeout_seconds, workers=workers)
    rows = MathRows("accuracy_math", budget, container=container, max_chars=max_chars)
    scores = registry.score_rows("accuracy_math", rows.score, completions, targets, row=range(len(completions)))
    return rows.finish(scores)

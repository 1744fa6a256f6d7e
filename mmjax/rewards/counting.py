"""Counting accuracy (SPEC 2.3): the first integer of the answer.

The answer is the container content only: the released reward has no fallback to the
whole completion, so a completion without a container scores 0.0
(``fallback_to_text=True`` reads the whole completion instead). The count is the first
run of ASCII digits or number word zero..twenty (case-insensitive, whole word),
whichever comes first: "3.5" reads 3, "-2" reads 2, "There are five" reads 5.
Reward 1.0 if it equals the target's count (read the same way), else 0.0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mmjax.rewards import parsing, registry
from mmjax.rewards.targets import target_text

NUMBER_WORDS: dict[str, int] = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_COUNT = re.compile(r"([0-9]+)|\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


def parse_count(answer: str) -> str | None:
    """The first count in ``answer`` as canonical digits (no leading zeros), or None."""
    m = _COUNT.search(answer)
    if m is None:
        return None
    if m.group(1) is not None:
        return m.group(1).lstrip("0") or "0"  # compared as text: no int() on huge digit runs
    return str(NUMBER_WORDS[m.group(2).lower()])


def count_score(text: str, target: Any, *, container: str = parsing.ANSWER, fallback_to_text: bool = False) -> float:
    gold = parse_count(target_text(target, container))
    if gold is None:
        raise registry.BadTarget(f"no count in target {str(target)[:80]!r}")
    answer = parsing.answer_or_text(text, container) if fallback_to_text else parsing.extract_answer(text, container)
    return float(answer is not None and parse_count(answer) == gold)


@registry.register("accuracy_count")
def count_reward(
    completions: Sequence[str],
    targets: Sequence[Any],
    *,
    container: str = parsing.ANSWER,
    fallback_to_text: bool = False,
    **kwargs: Any,
) -> list[float]:
    """Range {0, 1}; targets are counts (int or text such as ``"3"``, ``"three"``)."""
    parsing.check_container(container)
    return registry.score_rows(
        "accuracy_count",
        lambda text, target: count_score(text, target, container=container, fallback_to_text=fallback_to_text),
        completions, targets)

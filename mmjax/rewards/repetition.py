"""Repeated-line detection (released Visual Jigsaw code) and its penalty reward.

``has_repetition`` is the released ``has_excessive_repetition`` as its jigsaw reward calls
it (``min_len=7, max_run=3``): lines of the stripped text, each stripped, blank ones
dropped; a line under ``min_words`` words resets the run; lines are compared after
``str.lower()``, exactly as released (not ``casefold()``: "STRASSE" and "straße" are
different lines). No known difference from the released function remains; the reward
wrapper returns ``penalty`` or 0.0 where the released code returns 1 or 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmjax.rewards import registry


def has_repetition(text: str, min_words: int = 7, max_run: int = 3) -> bool:
    """True if a line of ``min_words``+ words repeats consecutively more than ``max_run`` times.

    Lines are stripped and compared after ``str.lower()`` (the released rule); blank lines
    are skipped (they do not break a run), a line shorter than ``min_words`` words breaks
    the run.
    """
    previous, run = None, 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line.split()) < min_words:
            previous, run = None, 0
            continue
        key = line.lower()  # released: lower(), which differs from casefold() on e.g. "ß"
        run = run + 1 if key == previous else 1
        previous = key
        if run > max_run:
            return True
    return False


@registry.register("repetition")
def repetition_reward(
    completions: Sequence[str],
    targets: Sequence[Any] | None = None,
    *,
    penalty: float = -0.5,
    min_words: int = 7,
    max_run: int = 3,
    **kwargs: Any,
) -> list[float]:
    """``penalty`` (default -0.5) if ``has_repetition``, else 0.0. Targets are ignored."""
    return registry.score_rows(
        "repetition",
        lambda text, _: penalty if has_repetition(text, min_words, max_run) else 0.0,
        completions,
        None,
    )

"""Format reward: 1.0 if the completion is ``<think>...</think>`` + container, else 0.0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmjax.rewards import parsing, registry


@registry.register("format")
def format_reward(
    completions: Sequence[str],
    targets: Sequence[Any] | None = None,
    *,
    container: str = parsing.ANSWER,
    **kwargs: Any,
) -> list[float]:
    """Range {0, 1}; the rule is ``parsing.think_format_ok``. Targets are ignored."""
    parsing.check_container(container)
    return registry.score_rows(
        "format", lambda text, _: float(parsing.think_format_ok(text, container)), completions, None
    )
